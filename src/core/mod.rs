//! The pure core of keyward: key format, digests, records, the route policy and the decision.
//!
//! Nothing here does I/O, reads a clock or draws randomness: callers pass `now` (Unix
//! milliseconds) and random bytes in. Nothing here panics on any input, so the same code runs in
//! the Worker, in the browser and in native tests and benchmarks.

pub mod budget;
pub mod cache;
pub mod code;
pub mod cors;
pub mod credential;
pub mod decision;
pub mod digest;
pub mod ip;
pub mod key;
pub mod leak;
pub mod limits;
pub mod method;
pub mod name_index;
pub mod origin;
pub mod page_token;
pub mod policy;
pub mod record;
pub mod time;
pub mod token;
pub mod usage;
pub mod webhook;

pub use code::Code;
pub use decision::{decide, Decision, GateRequest};
pub use policy::RoutePolicy;
pub use record::{CompiledKey, KeyRecord};
