//! `pharos-jepsen`: fault-injection harness for Pharos clusters (nemeses that
//! kill, pause and partition nodes; workloads; checkers that count every
//! acknowledged sample). Talks to nodes only over their public APIs.
//!
//! Built with the cluster (issue 7); empty until then.
