//! The worker pool (SPEC 8): app discovery, manifests, worker processes and their
//! supervision, and the static-file worker.
#![deny(unsafe_code)]

mod conditional;
pub mod discovery;
mod exposure;
mod inject;
pub mod manifest;
pub mod pool;
pub mod process;
pub mod static_files;

pub use discovery::{Discovery, Located};
pub use manifest::AppManifest;
pub use pool::{Address, App, Lease, Pool, PoolOptions, Unavailable, Worker};
