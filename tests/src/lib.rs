//! The helpers of the end-to-end tests (`e2e/`), which the benchmark tools (`bench/`) use too.
//!
//! The tests need the local stack that `make test` starts. Without it they fail with a message
//! that says so; they never skip.

mod faults;
mod functions;
mod items;
mod providers;
mod recorder;
mod requests;
mod runtime_api;
mod stack;
mod turns;

pub use faults::*;
pub use functions::*;
pub use items::*;
pub use providers::*;
pub use recorder::*;
pub use requests::*;
pub use runtime_api::*;
pub use stack::*;
pub use turns::*;
