use super::*;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;
use crate::inventory::KeyType;
use crate::pki::{Ca, CaKind, CertSpec};

/// Two clusters of other people, with fields this tool does not know (extensions, exec auth,
/// a namespace, preferences): all of it must come out as it went in.
const TWO_OTHERS: &str = r#"apiVersion: v1
kind: Config
preferences: {colors: true}
current-context: prod
clusters:
- name: prod
  cluster:
    server: https://prod.example.com:6443
    certificate-authority-data: UFJPRCBDQQ==
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: prod}
- name: lab
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: prod
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws, args: [eks, get-token]}
- name: lab
  user: {token: not-a-real-token}
contexts:
- name: prod
  context: {cluster: prod, user: prod, namespace: payments}
- name: lab
  context: {cluster: lab, user: lab}
"#;

/// A kubeconfig of a new cluster, as `init` writes it.
fn ours(ca: &Ca) -> R<String> {
    let (cert_pem, key_pem) = ca.issue(
        &CertSpec::client("kubernetes-admin", Some("kubeadm:cluster-admins")),
        KeyType::EcdsaP256,
        30,
    )?;
    let contents = Contents {
        server: "https://10.244.1.11:6443".into(),
        ca_pem: ca.cert_pem.clone(),
        cert_pem,
        key_pem,
    };
    Ok(render("test", "kubernetes-admin", &contents)?)
}

fn ca() -> R<Ca> {
    Ok(Ca::generate(CaKind::Kubernetes, KeyType::EcdsaP256, 365)?)
}

fn entry<'a>(config: &'a Value, list: &str, name: &str) -> R<&'a Value> {
    config[list]
        .as_sequence()
        .ok_or("not a list")?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .ok_or_else(|| format!("no {list} entry {name}").into())
}

#[test]
fn a_merge_keeps_every_other_cluster_and_adds_one_context() -> R {
    let ca = ca()?;
    let merged = merge(Some(TWO_OTHERS), &ours(&ca)?, "test", false)?;
    assert!(!merged.unchanged && !merged.made_current);
    let before: Value = serde_yaml::from_str(TWO_OTHERS)?;
    let after: Value = serde_yaml::from_str(&merged.text)?;
    for list in ["clusters", "users", "contexts"] {
        for name in ["prod", "lab"] {
            assert_eq!(
                entry(&after, list, name)?,
                entry(&before, list, name)?,
                "{list}/{name}"
            );
        }
        assert_eq!(
            after[list].as_sequence().ok_or("not a list")?.len(),
            3,
            "{list}"
        );
    }
    for field in ["preferences", "current-context", "apiVersion", "kind"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    // the new context names its own cluster and user, which are this cluster's
    let context = &entry(&after, "contexts", "test")?["context"];
    assert_eq!(
        (context["cluster"].as_str(), context["user"].as_str()),
        (Some("test"), Some("test"))
    );
    let cluster = &entry(&after, "clusters", "test")?["cluster"];
    assert_eq!(cluster["server"].as_str(), Some("https://10.244.1.11:6443"));
    let ca_data = B64.decode(
        cluster["certificate-authority-data"]
            .as_str()
            .ok_or("not a string")?,
    )?;
    assert_eq!(String::from_utf8(ca_data)?.trim(), ca.cert_pem.trim());
    assert!(entry(&after, "users", "test")?["user"]["client-key-data"].is_string());

    // merging the same again changes nothing
    let again = merge(Some(&merged.text), &ours(&ca)?, "test", false)?;
    assert!(!again.unchanged, "a new certificate is a change");
    let same = merge(
        Some(&merged.text),
        &again_text(&merged.text)?,
        "test",
        false,
    )?;
    assert!(same.unchanged, "the same entries again must be no change");
    Ok(())
}

/// The kubeconfig of context `test` inside a merged file, as a file of its own.
fn again_text(merged: &str) -> R<String> {
    let v: Value = serde_yaml::from_str(merged)?;
    let mut m = Mapping::new();
    for list in ["clusters", "users", "contexts"] {
        m.insert(
            list.into(),
            Value::Sequence(vec![entry(&v, list, "test")?.clone()]),
        );
    }
    Ok(serde_yaml::to_string(&Value::Mapping(m))?)
}

#[test]
fn a_same_named_entry_of_another_cluster_is_refused_unless_forced() -> R {
    let old = merge(None, &ours(&ca()?)?, "test", false)?.text;
    let new_cluster = ours(&ca()?)?;
    let err = merge(Some(&old), &new_cluster, "test", false).unwrap_err();
    assert!(
        err.contains("another CA") && err.contains("--force") && err.contains("--context"),
        "{err}"
    );
    // under another name it goes in beside the old one
    let beside = merge(Some(&old), &new_cluster, "test-2", false)?;
    let v: Value = serde_yaml::from_str(&beside.text)?;
    assert_eq!(v["contexts"].as_sequence().ok_or("not a list")?.len(), 2);
    // forced, it replaces the old cluster's entries
    let forced = merge(Some(&old), &new_cluster, "test", true)?;
    let v: Value = serde_yaml::from_str(&forced.text)?;
    assert_eq!(v["clusters"].as_sequence().ok_or("not a list")?.len(), 1);

    // a context of that name that points elsewhere, or a user without its cluster
    let other_context = TWO_OTHERS.replace("- name: lab\n  context", "- name: test\n  context");
    let err = merge(Some(&other_context), &new_cluster, "test", false).unwrap_err();
    assert!(
        err.contains("context named \"test\" for cluster \"lab\""),
        "{err}"
    );
    let lone_user = TWO_OTHERS.replace("- name: lab\n  user", "- name: test\n  user");
    let err = merge(Some(&lone_user), &new_cluster, "test", false).unwrap_err();
    assert!(err.contains("user named \"test\""), "{err}");
    Ok(())
}

#[test]
fn the_same_cluster_is_updated_in_place() -> R {
    let ca = ca()?;
    let old = merge(Some(TWO_OTHERS), &ours(&ca)?, "test", false)?.text;
    // a re-issued admin certificate of the same cluster: no --force needed
    let renewed = merge(Some(&old), &ours(&ca)?, "test", false)?;
    let v: Value = serde_yaml::from_str(&renewed.text)?;
    assert_eq!(v["users"].as_sequence().ok_or("not a list")?.len(), 3);
    assert_ne!(
        entry(&v, "users", "test")?,
        entry(&serde_yaml::from_str(&old)?, "users", "test")?
    );
    Ok(())
}

#[test]
fn a_new_file_gets_the_context_as_current_and_junk_is_refused() -> R {
    for empty in [None, Some(""), Some("\n")] {
        let merged = merge(empty, &ours(&ca()?)?, "test", false)?;
        assert!(merged.made_current);
        let v: Value = serde_yaml::from_str(&merged.text)?;
        assert_eq!(v["current-context"].as_str(), Some("test"));
        assert_eq!(v["kind"].as_str(), Some("Config"));
    }
    for junk in ["- a\n- b\n", "kind: Pod\n", "clusters: 3\n", "{unclosed"] {
        assert!(
            merge(Some(junk), &ours(&ca()?)?, "test", false).is_err(),
            "{junk}"
        );
    }
    Ok(())
}

#[test]
fn files_are_written_0600_and_merges_land_beside_nothing_else() -> R {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kube").join("config");
    std::fs::create_dir_all(path.parent().ok_or("no parent")?)?;
    std::fs::write(&path, TWO_OTHERS)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let ca = ca()?;
    let said = merge_into(&path, &ours(&ca)?, "test", false, true)?;
    assert!(said.contains("dry run"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&path)?,
        TWO_OTHERS,
        "a dry run wrote"
    );
    let said = merge_into(&path, &ours(&ca)?, "test", false, false)?;
    assert!(said.contains("kubectl --context test get nodes"), "{said}");
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<String> = std::fs::read_dir(path.parent().ok_or("no parent")?)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, ["config"], "a temporary file was left");
    let other_cluster = self::ca()?;
    let err = merge_into(&path, &ours(&other_cluster)?, "test", false, false).unwrap_err();
    assert!(
        err.starts_with(&path.display().to_string()),
        "the error names the file: {err}"
    );
    Ok(())
}
