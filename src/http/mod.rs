//! HTTP: the listeners and the route table.

pub mod middleware;
pub mod server;
pub mod settings;
pub mod tls;
