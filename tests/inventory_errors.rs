//! Bad inventories: every file in tests/inventories/bad/ states on its first line the error it
//! must produce (`# expect: LINE:COL: error: text`). `provision check` must exit 2 and print that
//! error with the file's path, and a hint for the user.

use std::path::Path;
use std::process::Command;

fn check(file: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["check", "-i"])
        .arg(file)
        .output()
        .expect("run provision");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_bad_inventory_is_refused_with_its_located_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inventories/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus has only {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no '# expect:' first line", file.display()));
        let (code, stdout, stderr) = check(file);
        let wanted = format!("{}:{expect}", file.display());
        if code != 2 || !stderr.contains(&wanted) || !stderr.contains("\n  hint: ") {
            failures.push(format!(
                "{}: exit {code}\n  wanted: {wanted}\n  stderr: {stderr}\n  stdout: {stdout}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_examples_are_valid() {
    for name in ["single-node.yaml", "ha.yaml"] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("inventories")
            .join(name);
        let (code, stdout, stderr) = check(&file);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(stdout.contains("hosts:"), "{stdout}");
    }
}

#[test]
fn the_resolved_cluster_derives_service_addresses_and_node_cidrs() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/ha.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args(["check", "--output", "json", "-i"])
        .arg(&file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["api_service_ip"], "10.96.0.1");
    assert_eq!(v["dns_service_ip"], "10.96.0.10");
    assert_eq!(v["endpoint"]["host"], "api.prod-eu1.example.com");
    let cidrs: Vec<&str> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pod_cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs[0], "10.244.0.0/24");
    assert_eq!(cidrs[5], "10.244.5.0/24");
    // non-root user: sudo is on; the bastion is inherited by every host
    assert_eq!(v["hosts"][3]["ssh"]["sudo"], true);
    assert_eq!(
        v["hosts"][3]["ssh"]["bastion"]["address"],
        "bastion.prod-eu1.example.com"
    );
}

#[test]
fn an_even_number_of_control_planes_is_a_located_warning_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("even.yaml");
    std::fs::write(
        &file,
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {name: even}\nspec:\n  hosts:\n  - {name: a, address: 10.0.0.1, roles: [control-plane]}\n  - {name: b, address: 10.0.0.2, roles: [control-plane]}\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&file);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:6:5: warning: spec.hosts: 2 control planes",
            file.display()
        )),
        "{stderr}"
    );
}
