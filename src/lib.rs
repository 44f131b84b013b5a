//! Sluice: an open-dataset access gateway.
//!
//! A request flows through one module per job:
//!
//! ```text
//! http ─► auth (Bearer JWT ─► Principal) ─► catalog (id ─► Dataset, version)
//!      ─► policy (Caller × Dataset ─► AccessPlan | Denial, pure)
//!      ─► slice (request checked against the plan ─► DataFusion plan ─► batches)
//!      ─► formats (batches ─► Arrow IPC | Parquet | CSV | NDJSON chunks) ─► socket
//! ```
//!
//! Only `http` knows actix-web; the core modules take and return plain types
//! and their own error enums. `startup` builds the whole server for `main`
//! and for the tests alike.
//!
//! Lints: a server answers every request, so the code outside tests may
//! not unwrap, expect or panic (each exception says why it cannot fail),
//! and `pub` means reachable from outside the crate.

#![warn(unreachable_pub)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod access_request;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod demo_data;
pub mod domain;
pub mod dp;
pub mod filter;
pub mod flight;
pub mod formats;
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod policy;
pub mod sharing;
pub mod slice;
pub mod snapshot;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod util;
