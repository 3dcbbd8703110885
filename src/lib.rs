//! provision: turns plain Linux machines into a working Kubernetes cluster over SSH.
//!
//! Data flows one way (docs/ARCHITECTURE.md): inventory → cluster → phase tree → actions per
//! host → facts, diff, apply → report.

// Hosts and inventories go wrong every day: outside tests nothing may panic; every failure is
// an error that says what to do.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod approver;
pub mod bundle;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod completion;
pub mod converge;
pub mod ha;
pub mod host;
pub mod inventory;
pub mod kubeconfig;
pub mod local;
pub mod output;
pub mod paths;
pub mod phases;
pub mod pki;
pub mod render;
pub mod run;
pub mod runtime;
pub mod settle;
pub mod snapshot;
pub mod ssh;
pub mod status;
pub mod systemd;
pub mod upgrade;
pub mod verify;
pub mod version;
pub mod x509;
