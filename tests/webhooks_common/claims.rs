//! The store's side of deliveries, on a real database: a delivery is claimed by one worker
//! at a time however many race for it, a lapsed claim can be taken over (and the old one can
//! no longer settle), and a delivered one is never due again.

use voxwire::store::{NewDelivery, Settle, Store, DELIVERED, PENDING};

use crate::store_common::Db;

const T0: i64 = 1_767_225_600_000;

fn delivery(id: &str, agent: &str) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        org: Some("acme".into()),
        sub: "ada".into(),
        agent: agent.into(),
        call_id: "call_1".into(),
        event: "call.ended".into(),
        url: "https://hooks.example/voxwire".into(),
        body: r#"{"id":"x","type":"call.ended","data":{"text":"é ✓ \"quoted\""}}"#.into(),
        created_at_ms: T0,
    }
}

fn retry_at(ms: i64) -> Settle {
    Settle {
        state: PENDING,
        next_attempt_ms: Some(ms),
        last_status: Some(503),
        last_error: Some("the receiver answered 503".into()),
        delivered_at_ms: None,
    }
}

async fn due(store: &Store, at: i64) -> Vec<String> {
    store
        .due_deliveries(&["hooked".to_string()], at, 10)
        .await
        .unwrap()
}

pub async fn claims_are_exclusive_and_delivered_is_final(db: &Db) {
    let store = db.store().await;
    let d = delivery("whd_1", "hooked");
    store.insert_delivery(&d).await.unwrap();
    store.insert_delivery(&d).await.unwrap();
    store
        .insert_delivery(&delivery("whd_other", "unsigned"))
        .await
        .unwrap();
    // Only the agents this server signs for, and only once due.
    assert_eq!(due(&store, T0).await, ["whd_1"]);
    assert!(due(&store, T0 - 1).await.is_empty());

    // Many workers race for it: one wins.
    let racers = (0..16).map(|i| {
        let store = store.clone();
        async move {
            store
                .claim_delivery("whd_1", &format!("claim-{i}"), T0, T0 + 1_000)
                .await
                .unwrap()
        }
    });
    let won: Vec<_> = futures::future::join_all(racers)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    let claimed = &won[0];
    assert_eq!(claimed.body, d.body, "the body is kept byte for byte");
    assert_eq!(claimed.attempts, 1);
    assert!(due(&store, T0 + 500).await.is_empty(), "claimed, not due");
    // Its claim lapses: another worker takes it, and the first can no longer settle it.
    let taken = store
        .claim_delivery("whd_1", "late", T0 + 1_000, T0 + 2_000)
        .await
        .unwrap()
        .expect("a lapsed claim is taken over");
    assert_eq!(taken.attempts, 2);
    for i in 0..16 {
        let stale = store
            .settle_delivery("whd_1", &format!("claim-{i}"), &retry_at(T0))
            .await
            .unwrap();
        assert!(!stale, "a lapsed claim settled the delivery");
    }
    assert!(store
        .settle_delivery("whd_1", "late", &retry_at(T0 + 5_000))
        .await
        .unwrap());
    let row = store.delivery("whd_1").await.unwrap().unwrap();
    assert_eq!(
        (
            row.state.as_str(),
            row.attempts,
            row.next_attempt_ms,
            row.last_status
        ),
        (PENDING, 2, Some(T0 + 5_000), Some(503))
    );
    assert!(due(&store, T0 + 4_999).await.is_empty());
    assert_eq!(due(&store, T0 + 5_000).await, ["whd_1"]);

    // Delivered: never due or claimable again.
    let third = store
        .claim_delivery("whd_1", "third", T0 + 5_000, T0 + 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.attempts, 3);
    let delivered = Settle {
        state: DELIVERED,
        next_attempt_ms: None,
        last_status: Some(204),
        last_error: None,
        delivered_at_ms: Some(T0 + 5_010),
    };
    assert!(store
        .settle_delivery("whd_1", "third", &delivered)
        .await
        .unwrap());
    assert!(!store
        .settle_delivery("whd_1", "third", &retry_at(T0))
        .await
        .unwrap());
    let far = T0 + 86_400_000;
    assert!(due(&store, far).await.is_empty());
    assert!(store
        .claim_delivery("whd_1", "fourth", far, far + 1)
        .await
        .unwrap()
        .is_none());
    let row = store.delivery("whd_1").await.unwrap().unwrap();
    assert_eq!(row.state, DELIVERED);
    assert_eq!(row.attempts, 3);
    assert_eq!(row.delivered_at_ms, Some(T0 + 5_010));
    assert_eq!(row.last_error, None);
    store.close().await;
}
