//! HTTP: the listeners, the route table, and the mapping of errors to the wire.

mod middleware;
pub mod problem;
pub mod router;
pub mod server;
pub mod tls;
