//! The shared [`MetaClient`] suite: every implementation must pass it. Run
//! against [`MemMetaClient`] here and against a Raft leader in
//! `cluster.rs`.

use std::time::Duration;

use pharos_meta::types::{BlockMeta, Command, NodeState, Rejection, RuleGroup};
use pharos_meta::{MemMetaClient, MetaClient, MetaError};

/// Expects a client whose cluster already holds node `first` (and possibly
/// others), with no shard map yet.
pub(crate) async fn run(c: &dyn MetaClient, first: u64) {
    assert!(c.is_leader_confirmed().await.unwrap());
    assert!(c.state().nodes.contains_key(&first));
    let mut watch = c.watch();

    // Shards: created once, rotating over the active nodes.
    let epoch = c
        .propose(Command::InitShards {
            shards: 8,
            replication_factor: 3,
            placement_labels: vec!["job".into(), "instance".into()],
        })
        .await
        .unwrap();
    assert_eq!(epoch, Some(1));
    let map = c.shard_map().expect("map after init");
    assert_eq!(map.shards, 8);
    let nodes = c.state().active_nodes().len();
    assert!(map
        .assignments
        .iter()
        .all(|a| a.replicas.len() == nodes.min(3)));
    let again = c
        .propose(Command::InitShards {
            shards: 8,
            replication_factor: 3,
            placement_labels: vec![],
        })
        .await;
    assert!(matches!(
        again,
        Err(MetaError::Rejected(Rejection::ShardsAlreadyInitialized))
    ));

    // Watchers see the change.
    tokio::time::timeout(Duration::from_secs(5), async {
        while watch.borrow_and_update().shard_map.is_none() {
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("watch saw the shard map");

    // Compare-and-set on the shard epoch.
    let e = c
        .propose(Command::SetShardPrimary {
            shard: 0,
            node: map.assignments[0].replicas[map.assignments[0].replicas.len() - 1],
            expected_epoch: 1,
        })
        .await
        .unwrap();
    assert_eq!(e, Some(2));
    let stale = c
        .propose(Command::SetShardReplicas {
            shard: 0,
            replicas: vec![first],
            expected_epoch: 1,
        })
        .await;
    assert!(matches!(
        stale,
        Err(MetaError::Rejected(Rejection::EpochMismatch {
            shard: 0,
            expected: 1,
            actual: 2
        }))
    ));

    // Blocks and rule groups.
    let block = BlockMeta {
        id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
        node: first,
        shards: vec![0, 1],
        min_time: 0,
        max_time: 7_200_000,
        num_series: 3,
        num_samples: 360,
        compaction_level: 1,
        deleted: false,
    };
    c.propose(Command::RecordBlock {
        block: block.clone(),
    })
    .await
    .unwrap();
    c.propose(Command::MarkBlockDeleted {
        id: block.id.clone(),
    })
    .await
    .unwrap();
    assert!(c.state().blocks[&block.id].deleted);
    c.propose(Command::PutRuleGroups {
        namespace: "alerts.yml".into(),
        groups: vec![RuleGroup {
            name: "g".into(),
            source: "name: g\nrules: []\n".into(),
        }],
    })
    .await
    .unwrap();
    assert_eq!(c.state().rule_groups["alerts.yml"][0].name, "g");

    // Node state changes.
    let r = c
        .propose(Command::SetNodeState {
            id: 999,
            state: NodeState::Down,
        })
        .await;
    assert!(matches!(
        r,
        Err(MetaError::Rejected(Rejection::UnknownNode(999)))
    ));
}

#[tokio::test]
async fn mem_client_passes_suite() {
    let c = MemMetaClient::default();
    c.add_node(1, "127.0.0.1:1".into()).await.unwrap();
    run(&c, 1).await;
}
