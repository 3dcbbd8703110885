//! The kubelet serving-certificate approver. Kubernetes approves no request for
//! `kubernetes.io/kubelet-serving` by itself, so without an approver a kubelet that rotates its
//! serving certificate months later waits forever, and `kubectl logs`/`exec` break when the old
//! one expires. This runs on every control plane (`provision approve-kubelet-serving`, a unit
//! the `csr-approver` phase installs with provision's own binary) and approves a node's request
//! when it names that node and only that node's names and addresses, as the Node reports them.
//!
//! Our own, because no existing engine can be had: postfinance/kubelet-csr-approver,
//! kontena/kubelet-rubber-stamp and alex1989hu/kubelet-serving-cert-approver are all refused by
//! the Go module proxy the bundle's components are built from (403), and none ships a release
//! binary without its container image. The check is the one the `kubelet` phase makes.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const NAMESPACE: &str = "kube-system";
pub const SERVICE_ACCOUNT: &str = "provision-csr-approver";
pub const CLUSTER_ROLE: &str = "provision:csr-approver";
pub const TOKEN_SECRET: &str = "provision-csr-approver-token";
pub const KUBECONFIG: &str = "/etc/kubernetes/csr-approver.conf";
pub const SERVICE: &str = "provision-csr-approver";
pub const UNIT: &str = "/etc/systemd/system/provision-csr-approver.service";
/// How often pending requests are looked at: the kubelet asks again while it waits.
const PERIOD: Duration = Duration::from_secs(3);

/// A kubelet serving request must be for `node`: CN `system:node:<node>`, O `system:nodes`, and
/// subject alternative names among the node's `names` and `addresses`.
pub fn serving_request_is_for(
    pem: &[u8],
    node: &str,
    names: &[String],
    addresses: &[IpAddr],
) -> Result<(), String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| "is not PEM".to_string())?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|_| "is not a certificate request".to_string())?;
    let subject = &req.certification_request_info.subject;
    let cn: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let o: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if cn != [format!("system:node:{node}").as_str()] || o != ["system:nodes"] {
        return Err(format!("names {cn:?} {o:?}, not node {node}"));
    }
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                let ok = match n {
                    GeneralName::DNSName(d) => {
                        names.iter().any(|m| m == d)
                            || addresses.iter().any(|a| a.to_string() == *d)
                    }
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        ip.is_some_and(|ip| addresses.contains(&ip))
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "asks for {n:?}, which is not a name or address of node {node}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What to do with one request: None when it is not ours to judge (another signer, decided
/// already); Some(Ok) to approve; Some(Err(why)) to leave it pending and say why.
pub fn verdict(csr: &CertificateSigningRequest, nodes: &[Node]) -> Option<Result<(), String>> {
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| !c.is_empty());
    if csr.spec.signer_name != SIGNER || decided {
        return None;
    }
    let user = csr.spec.username.as_deref().unwrap_or_default();
    let Some(node_name) = user.strip_prefix("system:node:") else {
        return Some(Err(format!("comes from {user:?}, not a node")));
    };
    let in_group = csr
        .spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == "system:nodes"));
    if !in_group {
        return Some(Err(format!(
            "comes from {user}, outside group system:nodes"
        )));
    }
    let Some(node) = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name))
    else {
        return Some(Err(format!("comes from {user}, whose Node does not exist")));
    };
    let mut names = vec![node_name.to_string()];
    let mut addresses = Vec::new();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        match a.type_.as_str() {
            "InternalIP" | "ExternalIP" => addresses.extend(a.address.parse::<IpAddr>().ok()),
            "Hostname" | "InternalDNS" | "ExternalDNS" => names.push(a.address.clone()),
            _ => {}
        }
    }
    Some(serving_request_is_for(
        &csr.spec.request.0,
        node_name,
        &names,
        &addresses,
    ))
}

/// Approves `name` (a node's serving request, judged by `verdict`).
pub async fn approve(
    csrs: &Api<CertificateSigningRequest>,
    name: &str,
    by: &str,
) -> Result<(), String> {
    let approval = serde_json::json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "ProvisionApproved",
        "message": format!("the node's own names and addresses, checked by {by}")}]}});
    csrs.patch_approval(name, &PatchParams::default(), &Patch::Merge(&approval))
        .await
        .map(|_| ())
        .map_err(|e| format!("approving {name}: {e}"))
}

/// One look at the pending requests: a line for each approved or left pending.
async fn pass(client: &kube::Client) -> Result<Vec<String>, String> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let pending = csrs
        .list(&ListParams::default().fields(&format!("spec.signerName={SIGNER}")))
        .await
        .map_err(|e| format!("listing certificate signing requests: {e}"))?;
    let mut lines = Vec::new();
    let mut nodes: Option<Vec<Node>> = None;
    for csr in &pending.items {
        if verdict(csr, &[]).is_none() {
            continue;
        }
        // the Nodes are read only when there is something to judge
        if nodes.is_none() {
            let all = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing nodes: {e}"))?;
            nodes = Some(all.items);
        }
        let name = csr.metadata.name.clone().unwrap_or_default();
        match verdict(csr, nodes.as_deref().unwrap_or_default()) {
            Some(Ok(())) => {
                approve(&csrs, &name, "provision's approver").await?;
                lines.push(format!(
                    "approved {name} of {}",
                    csr.spec.username.as_deref().unwrap_or_default()
                ));
            }
            Some(Err(why)) => lines.push(format!("left {name} pending: it {why}")),
            None => {}
        }
    }
    Ok(lines)
}

/// Runs until stopped: a pass every few seconds, each line said once (a request left pending
/// is not repeated every pass).
pub async fn run(kubeconfig: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let config = kube::config::Kubeconfig::from_yaml(&text)
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("API client: {e}"))?;
    println!("approving the kubelets' serving certificate requests ({SIGNER})");
    let mut said = std::collections::BTreeSet::new();
    let mut last_error = String::new();
    loop {
        match pass(&client).await {
            Ok(lines) => {
                last_error.clear();
                for l in lines {
                    if said.insert(l.clone()) {
                        println!("{l}");
                    }
                }
            }
            // the API may be away for a while (a restart, a lost control plane): try again,
            // and say an error once until it changes
            Err(e) if e != last_error => {
                eprintln!("{e}");
                last_error = e;
            }
            Err(_) => {}
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};

    fn request(cn: &str, o: &str, sans: &[&str]) -> Result<Vec<u8>, rcgen::Error> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        let key = rcgen::KeyPair::generate()?;
        Ok(p.serialize_request(&key)?.pem()?.into_bytes())
    }

    fn node(name: &str, ip: &str) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn csr(user: &str, groups: &[&str], signer: &str, pem: Vec<u8>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                request: ByteString(pem),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_nodes_own_request_is_approved_and_nothing_else() -> Result<(), rcgen::Error> {
        let nodes = [node("w1", "192.168.7.21"), node("w2", "192.168.7.22")];
        let own = request("system:node:w1", "system:nodes", &["w1", "192.168.7.21"])?;
        let nodes_group = ["system:nodes", "system:authenticated"];
        assert_eq!(
            verdict(
                &csr("system:node:w1", &nodes_group, SIGNER, own.clone()),
                &nodes
            ),
            Some(Ok(()))
        );
        // another signer, or decided already: not ours
        assert_eq!(
            verdict(
                &csr(
                    "system:node:w1",
                    &nodes_group,
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    own.clone()
                ),
                &nodes
            ),
            None
        );
        let mut approved = csr("system:node:w1", &nodes_group, SIGNER, own.clone());
        approved.status = Some(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
                conditions: Some(vec![Default::default()]),
                ..Default::default()
            },
        );
        assert_eq!(verdict(&approved, &nodes), None);
        // w2 asking for w1's certificate, w1 asking for another address or name, a user who is
        // no node, a node outside system:nodes, a Node that does not exist: left pending
        let refused = [
            csr("system:node:w2", &nodes_group, SIGNER, own.clone()),
            csr(
                "system:node:w1",
                &nodes_group,
                SIGNER,
                request("system:node:w1", "system:nodes", &["w1", "192.168.7.22"])?,
            ),
            csr(
                "system:node:w1",
                &nodes_group,
                SIGNER,
                request("system:node:w1", "system:nodes", &["kubernetes.default"])?,
            ),
            csr("alice", &["system:authenticated"], SIGNER, own.clone()),
            csr(
                "system:node:w1",
                &["system:authenticated"],
                SIGNER,
                own.clone(),
            ),
            csr(
                "system:node:w9",
                &nodes_group,
                SIGNER,
                request("system:node:w9", "system:nodes", &["w9"])?,
            ),
            csr("system:node:w1", &nodes_group, SIGNER, b"garbage".to_vec()),
        ];
        for r in &refused {
            assert!(
                matches!(verdict(r, &nodes), Some(Err(_))),
                "{:?}",
                r.spec.username
            );
        }
        Ok(())
    }
}
