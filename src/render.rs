//! Templates (tera, strict: an undefined variable is an error), embedded at build time.

use std::sync::LazyLock;
use tera::{Context, Tera};

const TEMPLATES: &[(&str, &str)] = &[
    ("sysctl.conf", include_str!("templates/sysctl.conf")),
    (
        "modules-load.conf",
        include_str!("templates/modules-load.conf"),
    ),
    (
        "component.service",
        include_str!("templates/component.service"),
    ),
    (
        "containerd-config.toml",
        include_str!("templates/containerd-config.toml"),
    ),
    ("crictl.yaml", include_str!("templates/crictl.yaml")),
    ("crio.conf", include_str!("templates/crio.conf")),
    ("coredns.yaml", include_str!("templates/coredns.yaml")),
    ("flannel.yaml", include_str!("templates/flannel.yaml")),
    ("calico.yaml", include_str!("templates/calico.yaml")),
    ("cilium.yaml", include_str!("templates/cilium.yaml")),
    ("registries.conf", include_str!("templates/registries.conf")),
    (
        "cni-bridge.conflist",
        include_str!("templates/cni-bridge.conflist"),
    ),
    ("pod-routes.sh", include_str!("templates/pod-routes.sh")),
    (
        "encryption-config.yaml",
        include_str!("templates/encryption-config.yaml"),
    ),
    (
        "audit-policy.yaml",
        include_str!("templates/audit-policy.yaml"),
    ),
    (
        "kubelet-config.yaml",
        include_str!("templates/kubelet-config.yaml"),
    ),
    (
        "kube-proxy-config.yaml",
        include_str!("templates/kube-proxy-config.yaml"),
    ),
    ("keepalived.conf", include_str!("templates/keepalived.conf")),
    ("haproxy.cfg", include_str!("templates/haproxy.cfg")),
];

static TERA: LazyLock<Result<Tera, String>> = LazyLock::new(|| {
    let mut t = Tera::default();
    t.autoescape_on(vec![]);
    t.add_raw_templates(TEMPLATES.iter().copied())
        .map_err(|e| format!("{e:?}"))?;
    Ok(t)
});

/// Renders an embedded template. The templates ship with the binary and are covered by tests,
/// so an error here is a defect in provision: it is returned (the phase fails, naming the
/// template) rather than ending the run.
pub fn render(name: &str, context: &Context) -> Result<String, String> {
    TERA.as_ref()
        .map_err(|e| e.clone())
        .and_then(|t| t.render(name, context).map_err(|e| format!("{e:?}")))
        .map_err(|e| defect(name, &e))
}

/// Renders an embedded template from a typed context (a serde struct).
pub fn render_typed<T: serde::Serialize>(name: &str, context: &T) -> Result<String, String> {
    let context = Context::from_serialize(context)
        .map_err(|e| defect(name, &format!("its context does not serialize: {e}")))?;
    render(name, &context)
}

fn defect(name: &str, detail: &str) -> String {
    format!(
        "template {name} failed to render ({detail}): this is a defect in provision; please report it with the inventory"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        assert!(TERA.is_ok(), "{:?}", TERA.as_ref().err());
    }

    #[test]
    fn undefined_variables_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let t = TERA.as_ref().map_err(|e| format!("{e:?}"))?;
        assert!(t.render("modules-load.conf", &Context::new()).is_err());
        Ok(())
    }
}
