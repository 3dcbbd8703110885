//! The container runtimes provision configures, one module each, behind one small descriptor:
//! the bundle components it needs, its configuration and unit, the CRI socket the kubelet and
//! crictl use, how its health is checked, and what it leaves on a host for `reset`. Adding a
//! runtime is one module (plus its templates) and a line in `ALL`/`of`.

pub mod containerd;
pub mod crio;

use crate::cluster::{Cluster, Host};
use crate::host::probe::{Observed, Probe};
use crate::host::{Action, Leftovers};
use crate::inventory::{RuntimeClass, RuntimeName};

/// crictl's configuration (the runtime's socket), written by either runtime.
pub const CRICTL_CONFIG: &str = "/etc/crictl.yaml";

/// The images a runtime is given: the pause image, and archives on the host to import
/// (path on the host, image reference).
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub sandbox: String,
    pub archives: Vec<(String, String)>,
}

pub trait Runtime: Sync {
    /// The name in the inventory (`spec.runtime.name`).
    fn name(&self) -> &'static str;

    /// Its systemd service, without `.service` (the kubelet starts after it).
    fn service(&self) -> &'static str;

    /// The CRI endpoint the kubelet and crictl use.
    fn socket(&self) -> &'static str;

    /// Its main configuration file (named in errors).
    fn config(&self) -> &'static str;

    /// The bundle components it needs, with the sandbox runtimes of `classes`.
    fn components(&self, classes: &[RuntimeClass]) -> Vec<&'static str>;

    /// What `actions` needs to know of a host.
    fn probes(&self) -> Vec<Probe> {
        Vec::new()
    }

    /// Its configuration, unit and images on a host.
    fn actions(
        &self,
        cluster: &Cluster,
        host: &Host,
        observed: &Observed,
        images: &Images,
    ) -> Result<Vec<Action>, String>;

    /// A shell check that waits until the CRI answers (exit 0), else says why on stderr.
    fn health_check(&self) -> String;

    /// What it leaves on a host: `reset` removes it whichever runtime the cluster runs.
    fn leftovers(&self) -> Leftovers;
}

/// Every runtime provision knows (reset removes what any of them left).
pub static ALL: [&dyn Runtime; 2] = [&containerd::Containerd, &crio::CriO];

pub fn of(name: RuntimeName) -> &'static dyn Runtime {
    match name {
        RuntimeName::Containerd => &containerd::Containerd,
        RuntimeName::CriO => &crio::CriO,
    }
}

/// The runtime's systemd unit, as `After=` names it.
pub fn unit_name(name: RuntimeName) -> String {
    format!("{}.service", of(name).service())
}

/// crictl's configuration for a runtime's socket.
fn crictl_config(socket: &str) -> Result<Action, String> {
    #[derive(serde::Serialize)]
    struct Crictl<'a> {
        endpoint: &'a str,
    }
    let text = crate::render::render_typed("crictl.yaml", &Crictl { endpoint: socket })?;
    Ok(Action::file(CRICTL_CONFIG, text, 0o644))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn cluster(spec: &str) -> Cluster {
        crate::cluster::from_text(&format!(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n{spec}  hosts:\n  - {{name: n1, address: 192.168.7.20, roles: [control-plane]}}\n"
        ))
    }

    pub fn file<'a>(actions: &'a [Action], path: &str) -> &'a str {
        actions
            .iter()
            .find_map(|a| match a {
                Action::File(f) if f.path == path => std::str::from_utf8(&f.content).ok(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {path}"))
    }
}
