//! `pharos`: the server binary. Wires storage, query, meta and alerting into
//! one process: config, HTTP API, remote_write receiver, scrape manager and
//! internal gRPC server.

fn main() -> anyhow::Result<()> {
    anyhow::bail!(
        "the pharos server is not built yet (issue 4); this checkout provides the storage \
         engine and PromQL libraries only"
    )
}
