//! Scraping (issue 5): reads the `scrape_configs` of a `prometheus.yml`,
//! discovers targets (static and file-based), relabels them, scrapes the
//! ones this node is assigned on a jittered schedule, parses Prometheus
//! text and OpenMetrics bodies, and writes samples, report series and
//! staleness markers through the node's [`crate::sink::WriteSink`].
//!
//! Layout: [`config`] (YAML types), [`exposition`] (parsers, no server
//! dependencies), [`relabel`], [`target`] (population and placement),
//! [`client`] (HTTP fetch), [`scrape_loop`] (one target), [`manager`]
//! (targets, reloads, file_sd), [`api`] (`/api/v1/targets` JSON types).
//! Must not: serve HTTP routes itself or reach into storage directly.

pub mod api;
pub mod client;
pub mod config;
pub mod exposition;
pub mod manager;
pub mod relabel;
pub mod scrape_loop;
pub mod target;

#[cfg(test)]
mod tests;
