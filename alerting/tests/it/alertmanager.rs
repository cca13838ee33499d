//! placeholder until the Alertmanager test lands
