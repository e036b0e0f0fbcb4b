//! HTTP: the listeners and the route table.

mod middleware;
pub mod router;
pub mod server;
pub mod settings;
pub mod tls;
