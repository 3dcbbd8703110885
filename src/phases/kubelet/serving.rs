//! Kubelet serving certificates from the cluster CA (serverTLSBootstrap): Kubernetes approves none
//! of those by itself, so the node's own request is approved here after its subject and names are
//! checked.

use super::*;

pub(super) const SERVING_CERT: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";

pub(super) const SERVING_SIGNER: &str = crate::approver::SIGNER;

/// The kubelet asks for a serving certificate signed by the cluster CA (serverTLSBootstrap;
/// Kubernetes approves none of these by itself): approve the node's request when it names this
/// node and only its name and address, then wait until the kubelet holds the certificate.
pub(super) async fn approve_serving_certificate(
    ctx: &Ctx,
    host: &Host,
    after: &mut After,
) -> Result<(), String> {
    let session = ctx.session(host).await.map_err(|e| e.to_string())?;
    let has_cert = || async {
        session
            .exec(&format!("test -s {SERVING_CERT}"), None)
            .await
            .map(|o| o.status == 0)
            .map_err(|e| e.to_string())
    };
    if has_cert().await? {
        return Ok(());
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(client(ctx, "admin").await?);
    let user = format!("system:node:{}", host.name);
    let started = Instant::now();
    loop {
        for csr in csrs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
        {
            let decided = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| !c.is_empty());
            if csr.spec.signer_name != SERVING_SIGNER
                || csr.spec.username.as_deref() != Some(&user)
                || decided
            {
                continue;
            }
            let name = csr.metadata.name.clone().unwrap_or_default();
            if let Err(why) = serving_request_is_for(&csr.spec.request.0, host) {
                return Err(format!(
                    "the serving certificate request {name} of {} {why}; it was left pending: deny it (`kubectl certificate deny {name}`) and find out who made it",
                    host.name
                ));
            }
            crate::approver::approve(&csrs, &name, "provision").await?;
            after
                .changes
                .push(format!("approve the serving certificate of {}", host.name));
        }
        if has_cert().await? {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err(format!(
                "the kubelet of {} has no serving certificate after 90 s (no request of {user} for {SERVING_SIGNER} was approved and issued); `kubectl logs` and `exec` need it: check `kubectl get csr` and `journalctl -u kubelet`",
                host.name
            ));
        }
        tokio::time::sleep(crate::api::poll_pause(started)).await;
    }
}

/// A kubelet serving request must be for this node: CN system:node:<name>, O system:nodes, and
/// subject alternative names among the node's name and address (the inventory's).
pub(super) fn serving_request_is_for(pem: &[u8], host: &Host) -> Result<(), String> {
    let addresses: Vec<std::net::IpAddr> = host.address.parse().into_iter().collect();
    let names = [host.name.clone(), host.address.clone()];
    crate::approver::serving_request_is_for(pem, &host.name, &names, &addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        let cluster = crate::cluster::from_text(
            "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  hosts:\n  - {name: w1, address: 192.168.7.21, roles: [worker]}\n  - {name: cp, address: 192.168.7.20, roles: [control-plane]}\n",
        );
        cluster.hosts[0].clone()
    }

    fn request(cn: &str, o: &str, sans: &[&str]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        let key = rcgen::KeyPair::generate()?;
        Ok(p.serialize_request(&key)?.pem()?.into_bytes())
    }

    #[test]
    fn only_the_nodes_own_serving_requests_are_approved() -> Result<(), Box<dyn std::error::Error>>
    {
        let h = host();
        assert_eq!(
            serving_request_is_for(
                &request("system:node:w1", "system:nodes", &["w1", "192.168.7.21"])?,
                &h
            ),
            Ok(())
        );
        assert!(
            serving_request_is_for(
                &request("system:node:w1", "system:nodes", &["w1", "10.0.0.9"])?,
                &h
            )
            .is_err()
        );
        assert!(
            serving_request_is_for(
                &request("system:node:w1", "system:nodes", &["kubernetes.default"])?,
                &h
            )
            .is_err()
        );
        assert!(
            serving_request_is_for(&request("system:node:cp", "system:nodes", &["w1"])?, &h)
                .is_err()
        );
        assert!(
            serving_request_is_for(&request("system:node:w1", "system:masters", &["w1"])?, &h)
                .is_err()
        );
        assert!(serving_request_is_for(b"garbage", &h).is_err());
        Ok(())
    }
}
