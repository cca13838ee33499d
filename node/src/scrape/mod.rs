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
//! Wiring into the server (what `server.rs` does):
//! 1. At start, after loading the config file:
//!    `let scrape = ScrapeManager::new(sink.clone(), Arc::new(SingleNode));`
//!    then `scrape.reload_file(&config_path)?` (inside the runtime).
//! 2. On `POST /-/reload` and SIGHUP: parse the node's own
//!    [`crate::config::Config`] first; if it loads, call
//!    `scrape.reload_file(&config_path)`; on `Err` answer 500 with the
//!    error text (file, line, field) — the running scrape config stays.
//! 3. Routes: `GET /api/v1/targets` → `api::targets(&scrape,
//!    api::StateFilter::parse(state), scrape_pool)`; `GET
//!    /api/v1/targets/metadata` → `api::targets_metadata(&scrape,
//!    &matchers, metric, limit)`; both inside the usual success envelope.
//! 4. On shutdown: `scrape.shutdown().await` before closing storage.
//! 5. Drop `scrape_configs` from `Config::inert_sections`.

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
