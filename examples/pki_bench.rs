//! Figures for bench/pki: time to generate the whole kubeadm certificate set (3 CAs, the
//! service-account key, 7 leaves and 5 kubeconfig client certificates per control plane).

use provision::cluster::{self, Cluster};
use provision::inventory::{self, KeyType};
use provision::pki::kubeconfig::KubeconfigKind;
use provision::pki::{Ca, CaKind, Leaf, service_account_key};
use std::time::Instant;

fn cluster(control_planes: usize) -> Cluster {
    let hosts: String = (1..=control_planes)
        .map(|i| format!("  - {{name: cp{i}, address: 192.168.0.{i}, roles: [control-plane]}}\n"))
        .collect();
    let text = format!(
        "apiVersion: provision/v1alpha1\nkind: Cluster\nmetadata: {{name: bench}}\nspec:\n  hosts:\n{hosts}"
    );
    let dir = std::env::temp_dir().join(format!("provision-pki-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("inventory.yaml");
    std::fs::write(&file, text).expect("write inventory");
    let loaded = inventory::load(&file).expect("inventory");
    let c = cluster::resolve(&loaded).expect("cluster").0;
    let _ = std::fs::remove_dir_all(&dir);
    c
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
        for cps in [1, 3] {
            let c = cluster(cps);
            let mut best = f64::MAX;
            for _ in 0..runs {
                let t = Instant::now();
                let cas: Vec<Ca> = CaKind::ALL
                    .iter()
                    .map(|k| Ca::generate(*k, key_type, 3650).expect("ca"))
                    .collect();
                service_account_key(key_type).expect("sa");
                for host in &c.hosts {
                    for leaf in Leaf::ALL {
                        let ca = cas.iter().find(|ca| ca.kind == leaf.ca()).expect("ca");
                        ca.issue(&leaf.spec(&c, host), key_type, 365).expect("leaf");
                    }
                    for k in KubeconfigKind::ALL {
                        cas[0]
                            .issue(&k.client(host), key_type, 365)
                            .expect("client");
                    }
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{key_type:?}, {cps} control plane(s): whole set in {best:.3}s (best of {runs})"
            );
        }
    }
}
