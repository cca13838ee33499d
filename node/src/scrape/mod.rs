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
//!
//! Wiring into the server (done in `services.rs` / `http/services.rs`):
//! 1. `crate::config::Config` holds `scrape_configs` as
//!    [`config::ScrapeConfig`] and validates the file with
//!    [`config::ScrapeFile::parse`], so a bad scrape section is refused
//!    with file, line and field before anything is applied.
//! 2. At start: `ScrapeManager::new(sink, Arc::new(SingleNode))`, then
//!    `manager.apply(config.scrape_settings(base_dir))`; on `/-/reload` and
//!    SIGHUP the same `apply` with the newly loaded config, only if it
//!    loaded. ([`manager::ScrapeManager::reload_file`] does load-then-apply
//!    in one call for callers without their own loader.)
//! 3. Routes: `GET /api/v1/targets` → [`api::targets`];
//!    `GET /api/v1/targets/metadata` → [`api::targets_metadata`].
//! 4. Shutdown: `manager.shutdown().await` before storage closes.
//! 5. A cluster supplies its shard map as a [`target::Sharded`] (or any
//!    [`target::Assignment`]) instead of `SingleNode`.

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
