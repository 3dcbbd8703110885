use super::*;
use std::process::Command;

type R = Result<(), Box<dyn std::error::Error>>;

fn cluster(extra_spec: &str) -> Cluster {
    let text = format!(
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  controlPlaneEndpoint: api.example.com:6443\n  apiServer: {{certSANs: [lb.example.com, 203.0.113.7]}}\n{extra_spec}  hosts:\n  - {{name: cp1, address: 172.16.0.11, roles: [control-plane]}}\n"
    );
    crate::cluster::from_text(&text)
}

fn parsed(pem: &str) -> Result<(Vec<u8>, X509Certificate<'static>), Box<dyn std::error::Error>> {
    let (_, p) = parse_x509_pem(pem.as_bytes())?;
    let der = p.contents.clone();
    let leaked: &'static [u8] = Box::leak(der.clone().into_boxed_slice());
    let (_, cert) = X509Certificate::from_der(leaked)?;
    Ok((der, cert))
}

fn openssl(args: &[&str], dir: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    Ok(text)
}

fn whole_set(key_type: KeyType) -> R {
    let c = cluster("");
    let host = &c.hosts[0];
    let cas: Vec<Ca> = CaKind::ALL
        .iter()
        .map(|k| Ca::generate(*k, key_type, 3650))
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    for ca in &cas {
        let (_, cert) = parsed(&ca.cert_pem)?;
        let bc = cert
            .basic_constraints()?
            .ok_or("a CA without basicConstraints")?;
        assert!(bc.value.ca);
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .ok_or("a CA without a common name")?
                .as_str()?,
            ca.kind.common_name()
        );
        let days = cert
            .validity()
            .time_to_expiration()
            .ok_or("an expired CA")?
            .whole_days();
        assert!((3649..=3650).contains(&days), "{days}");
        std::fs::write(
            dir.path().join(format!("{}.crt", ca.kind.name())),
            &ca.cert_pem,
        )?;
    }
    for leaf in Leaf::ALL {
        let ca = cas
            .iter()
            .find(|ca| ca.kind == leaf.ca())
            .ok_or("a leaf of no CA")?;
        let spec = leaf.spec(&c, host);
        let (cert_pem, key_pem) = ca.issue(&spec, key_type, 365)?;
        assert_eq!(
            ca.check(&spec, &cert_pem, Some(&key_pem)),
            Ok(()),
            "{}",
            leaf.name()
        );
        let (_, cert) = parsed(&cert_pem)?;
        let bc = cert.basic_constraints()?;
        assert!(
            bc.is_some_and(|b| !b.value.ca),
            "{}: CA:FALSE missing",
            leaf.name()
        );
        assert!(
            cert.extensions()
                .iter()
                .any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER),
            "{}: SKI",
            leaf.name()
        );
        assert!(
            cert.extensions()
                .iter()
                .any(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER),
            "{}: AKI",
            leaf.name()
        );
        let ku = cert.key_usage()?.ok_or("a leaf without keyUsage")?.value;
        assert!(
            ku.digital_signature() && !ku.key_cert_sign(),
            "{}",
            leaf.name()
        );
        let days = cert
            .validity()
            .time_to_expiration()
            .ok_or("an expired leaf")?
            .whole_days();
        assert!((364..=365).contains(&days), "{}: {days}", leaf.name());
        assert!(
            cert.raw_serial().len() >= 16,
            "{}: short serial",
            leaf.name()
        );
        let file = format!("{}.crt", leaf.name());
        std::fs::write(dir.path().join(&file), &cert_pem)?;
        let ca_file = format!("{}.crt", leaf.ca().name());
        let purpose = if spec.server {
            "sslserver"
        } else {
            "sslclient"
        };
        let out = openssl(
            &["verify", "-CAfile", &ca_file, "-purpose", purpose, &file],
            dir.path(),
        )?;
        assert!(out.contains(": OK"), "{out}");
        if spec.client {
            openssl(
                &[
                    "verify",
                    "-CAfile",
                    &ca_file,
                    "-purpose",
                    "sslclient",
                    &file,
                ],
                dir.path(),
            )?;
        }
        for ip in &spec.ips {
            let out = openssl(
                &["x509", "-in", &file, "-noout", "-checkip", &ip.to_string()],
                dir.path(),
            )?;
            assert!(out.contains("does match"), "{}: {out}", leaf.name());
        }
        for name in &spec.dns {
            let out = openssl(
                &["x509", "-in", &file, "-noout", "-checkhost", name],
                dir.path(),
            )?;
            assert!(out.contains("does match"), "{}: {out}", leaf.name());
        }
    }
    Ok(())
}

#[test]
fn the_kubeadm_set_with_ecdsa_checks_out() -> R {
    whole_set(KeyType::EcdsaP256)
}

#[test]
fn the_kubeadm_set_with_rsa_checks_out() -> R {
    whole_set(KeyType::Rsa2048)
}

#[test]
fn subjects_and_sans_are_kubeadms() {
    let c = cluster("");
    let h = &c.hosts[0];
    let api = Leaf::Apiserver.spec(&c, h);
    assert_eq!(api.common_name, "kube-apiserver");
    let dns: Vec<&str> = api.dns.iter().map(String::as_str).collect();
    assert_eq!(
        dns,
        [
            "api.example.com",
            "cp1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "lb.example.com"
        ]
    );
    let ips: Vec<String> = api.ips.iter().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["10.96.0.1", "172.16.0.11", "203.0.113.7"]);
    let kc = Leaf::ApiserverKubeletClient.spec(&c, h);
    assert_eq!(kc.organizations, ["kubeadm:cluster-admins"]);
    let peer = Leaf::EtcdPeer.spec(&c, h);
    assert_eq!(peer.common_name, "cp1");
    assert!(peer.server && peer.client);
    let ips: Vec<String> = peer.ips.iter().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["127.0.0.1", "172.16.0.11", "::1"]);
    assert_eq!(
        Leaf::EtcdHealthcheckClient.spec(&c, h).common_name,
        "kube-etcd-healthcheck-client"
    );
}

#[test]
fn check_names_every_reason_to_reissue() -> R {
    let c = cluster("");
    let h = &c.hosts[0];
    let ca = Ca::generate(CaKind::Kubernetes, KeyType::EcdsaP256, 3650)?;
    let other = Ca::generate(CaKind::Kubernetes, KeyType::EcdsaP256, 3650)?;
    let spec = Leaf::Apiserver.spec(&c, h);
    let (cert, key) = ca.issue(&spec, KeyType::EcdsaP256, 365)?;

    let mut new_endpoint = spec.clone();
    new_endpoint.dns.insert("api2.example.com".into());
    let e = ca.check(&new_endpoint, &cert, Some(&key)).unwrap_err();
    assert!(e.contains("SANs") && e.contains("api2.example.com"), "{e}");

    let e = other.check(&spec, &cert, Some(&key)).unwrap_err();
    assert!(e.contains("not signed by the current kubernetes CA"), "{e}");

    let (_, other_key) = ca.issue(&spec, KeyType::EcdsaP256, 365)?;
    let e = ca.check(&spec, &cert, Some(&other_key)).unwrap_err();
    assert!(e.contains("key does not match"), "{e}");

    let (short, short_key) = ca.issue(&spec, KeyType::EcdsaP256, 10)?;
    let e = ca.check(&spec, &short, Some(&short_key)).unwrap_err();
    assert!(e.contains("expires within 30 days"), "{e}");

    let e = ca
        .check(&Leaf::FrontProxyClient.spec(&c, h), &cert, None)
        .unwrap_err();
    assert!(e.contains("CN"), "{e}");
    assert!(ca.check(&spec, "garbage", None).is_err());
    Ok(())
}

#[test]
fn ca_keys_never_show_in_debug_output() -> R {
    let ca = Ca::generate(CaKind::Etcd, KeyType::EcdsaP256, 10)?;
    let shown = format!("{ca:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    Ok(())
}

#[test]
fn external_cas_must_be_cas_with_their_own_key() -> R {
    let ca = Ca::generate(CaKind::Kubernetes, KeyType::Rsa2048, 10)?;
    let key = ca.key_pem.clone().ok_or("no key")?;
    assert_eq!(
        crate::x509::check_external_ca(&ca.cert_pem, Some(&key)),
        Ok(())
    );
    assert_eq!(crate::x509::check_external_ca(&ca.cert_pem, None), Ok(()));
    let other = Ca::generate(CaKind::Kubernetes, KeyType::Rsa2048, 10)?;
    assert!(
        crate::x509::check_external_ca(&ca.cert_pem, other.key_pem.as_deref())
            .unwrap_err()
            .contains("does not belong")
    );
    let c = cluster("");
    let (leaf, _) = ca.issue(
        &Leaf::FrontProxyClient.spec(&c, &c.hosts[0]),
        KeyType::Rsa2048,
        5,
    )?;
    assert!(
        crate::x509::check_external_ca(&leaf, None)
            .unwrap_err()
            .contains("not a CA")
    );
    Ok(())
}

#[test]
fn service_account_keys_pair_up() -> R {
    let (private, public) = service_account_key(KeyType::EcdsaP256)?;
    assert!(private.contains("PRIVATE KEY") && public.contains("PUBLIC KEY"));
    assert_eq!(public_key_of(&private)?, public);
    Ok(())
}

/// A person's certificate in several groups: every group is an O of the subject, in order,
/// and the certificate still verifies against the CA (ours and OpenSSL's check), for both
/// key types (ECDSA and RSA signatures).
#[test]
fn a_client_in_several_groups_has_one_organization_each() -> Result<(), Box<dyn std::error::Error>>
{
    for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
        let ca = Ca::generate(CaKind::Kubernetes, key_type, 3650)?;
        let mut spec = CertSpec::client("alice", None);
        spec.organizations = vec!["dev".into(), "ops".into(), "team:a b".into()];
        let (cert, key) = ca.issue(&spec, key_type, 90)?;
        let (_, x509) = parsed(&cert)?;
        let orgs: Vec<&str> = x509
            .subject()
            .iter_organization()
            .map(|a| a.as_str())
            .collect::<Result<_, _>>()?;
        assert_eq!(orgs, ["dev", "ops", "team:a b"]);
        assert_eq!(
            x509.subject().to_string(),
            "CN=alice, O=dev, O=ops, O=team:a b"
        );
        ca.check(&spec, &cert, Some(&key))?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.crt"), &ca.cert_pem)?;
        std::fs::write(dir.path().join("alice.crt"), &cert)?;
        let out = openssl(&["verify", "-CAfile", "ca.crt", "alice.crt"], dir.path())?;
        assert!(out.contains("alice.crt: OK"), "{out}");
        // a different group set is a different certificate
        spec.organizations.pop();
        assert!(ca.check(&spec, &cert, Some(&key)).is_err());
    }
    Ok(())
}
