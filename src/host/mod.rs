//! Desired state on hosts: actions, facts, diff, executor (DESIGN §1).

pub mod action;
pub mod diff;
pub mod executor;
pub mod facts;
pub mod probe;
pub mod read;

pub use action::{Action, UnitSpec};
