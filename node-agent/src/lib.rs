//! The Stratus node agent: registers its Node, renews its Lease, runs the Instances bound to it
//! as containers, probes them, reports their status and usage, meters them for billing, and
//! serves their logs.
//!
//! [`agent::run`] is the entry point; the binary only parses flags and calls it.

pub mod agent;
pub mod config;
pub mod hollow;
pub mod instance;
pub mod logs;
pub mod metering;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod runtime;
pub mod security;
pub mod server;

pub use config::{AgentConfig, AgentTls};
