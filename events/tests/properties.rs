//! Invariants under random command sequences: whatever clients send, in
//! whatever order and with whatever backdating, the accepted commands never
//! make available stock or any balance negative where that is not allowed,
//! never leave more reserved than on hand, and the events they produced fold
//! (after a round trip through their stored JSON form) into exactly the state
//! that `decide` saw.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use events::*;
use proptest::prelude::*;

const WAREHOUSES: [&str; 3] = ["W1", "W2", "WNEG"];
const CHARGES: [&str; 2] = ["C1", "C2"];

fn policy() -> Policy {
    Policy { negative_stock_warehouses: [wh("WNEG")].into() }
}

/// A command with its clock: how far `now` advanced and how far back it posts.
#[derive(Debug, Clone)]
struct Step {
    advance_hours: i64,
    backdate_hours: Option<i64>,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Receipt(usize, usize, i64),
    Issue(usize, usize, i64),
    Transfer(usize, usize, usize, i64),
    Count(usize, usize, i64),
    Reserve(u8, usize, usize, i64),
    Release(u8, Option<i64>),
    Consume(u8, Option<i64>),
    Block(usize),
    Unblock(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CHARGES.len();
    let w = 0..WAREHOUSES.len();
    let n = 1i64..40;
    prop_oneof![
        4 => (c.clone(), w.clone(), n.clone()).prop_map(|(c, w, n)| Op::Receipt(c, w, n)),
        4 => (c.clone(), w.clone(), n.clone()).prop_map(|(c, w, n)| Op::Issue(c, w, n)),
        2 => (c.clone(), w.clone(), w.clone(), n.clone()).prop_map(|(c, a, b, n)| Op::Transfer(c, a, b, n)),
        1 => (c.clone(), w.clone(), 0i64..60).prop_map(|(c, w, n)| Op::Count(c, w, n)),
        3 => (0u8..4, c.clone(), w.clone(), n.clone()).prop_map(|(r, c, w, n)| Op::Reserve(r, c, w, n)),
        2 => (0u8..4, proptest::option::of(n.clone())).prop_map(|(r, n)| Op::Release(r, n)),
        2 => (0u8..4, proptest::option::of(n)).prop_map(|(r, n)| Op::Consume(r, n)),
        1 => c.clone().prop_map(Op::Block),
        1 => c.prop_map(Op::Unblock),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (0i64..48, proptest::option::of(0i64..(24 * 35)), op())
        .prop_map(|(advance_hours, backdate_hours, op)| Step { advance_hours, backdate_hours, op })
}

fn command(step: &Step, now: DateTime<Utc>) -> Command {
    let at = step.backdate_hours.map(|h| now - Duration::hours(h));
    let r = |i: u8| format!("R{i}");
    match step.op {
        Op::Receipt(c, w, n) => receipt(CHARGES[c], WAREHOUSES[w], n, at),
        Op::Issue(c, w, n) => issue(CHARGES[c], WAREHOUSES[w], n, at),
        Op::Transfer(c, a, b, n) => Command::TransferStock(TransferStock {
            article: article(),
            charge: charge(CHARGES[c]),
            from: wh(WAREHOUSES[a]),
            to: wh(WAREHOUSES[b]),
            quantity: q(n),
            posted_at: at,
        }),
        Op::Count(c, w, n) => count(CHARGES[c], WAREHOUSES[w], n, at),
        Op::Reserve(i, c, w, n) => reserve(&r(i), CHARGES[c], WAREHOUSES[w], n),
        Op::Release(i, n) => release(&r(i), n),
        Op::Consume(i, n) => Command::ConsumeReservation(ConsumeReservation {
            article: article(),
            reservation: rid(&r(i)),
            quantity: n.map(q),
            posted_at: at,
        }),
        Op::Block(c) => block(CHARGES[c]),
        Op::Unblock(c) => Command::ReleaseCharge(ReleaseCharge { article: article(), charge: charge(CHARGES[c]) }),
    }
}

fn check_invariants(state: &ArticleState, policy: &Policy) -> Result<(), TestCaseError> {
    for (charge, c) in &state.charges {
        for (warehouse, bucket) in &c.stock {
            let open: i64 = state
                .reservations
                .values()
                .filter(|r| &r.charge == charge && &r.warehouse == warehouse)
                .map(|r| r.remaining)
                .sum();
            prop_assert_eq!(bucket.reserved, open, "reserved of {}/{} is the sum of open reservations", charge, warehouse);
            let last = bucket.ledger.last().map_or(bucket.opening, |e| e.balance);
            prop_assert_eq!(bucket.on_hand, last, "on hand is the ledger's last balance");
            let mut running = bucket.opening;
            for e in &bucket.ledger {
                running += e.delta;
                prop_assert_eq!(e.balance, running, "ledger balances add up");
            }
            if !policy.allows_negative(warehouse) {
                prop_assert!(bucket.available() >= 0, "available {} < 0 in {}/{}", bucket.available(), charge, warehouse);
                prop_assert!(bucket.reserved <= bucket.on_hand, "reserved above on hand in {}/{}", charge, warehouse);
                prop_assert!(bucket.opening >= 0);
                prop_assert!(bucket.ledger.iter().all(|e| e.balance >= 0), "a balance over time went negative");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn accepted_commands_keep_every_invariant_and_their_events_refold_to_the_same_state(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let policy = policy();
        let mut now = common::now() - Duration::days(60);
        let mut state = ArticleState::default();
        let mut recorded: Vec<RecordedEvent> = Vec::new();
        let stream = StreamId::article(&article());
        let setup = [register(), register_charge("C1", None), register_charge("C2", None)];
        let mut accept = |state: &mut ArticleState, command: Command, now: DateTime<Utc>, i: usize| {
            let ctx = Context { now, policy: &policy };
            let Ok(events) = decide(state, command, &ctx) else { return false };
            let meta = CommandMeta {
                command_id: uuid::Uuid::from_u128(i as u128),
                correlation_id: "prop".into(),
                actor: "proptest".into(),
                recorded_at: now,
                traceparent: None,
            };
            recorded.extend(Envelope::wrap(&stream, state.version, &meta, events.clone()).iter().map(Envelope::to_record));
            *state = events.iter().fold(std::mem::take(state), evolve);
            true
        };
        for (i, command) in setup.into_iter().enumerate() {
            prop_assert!(accept(&mut state, command, now, i));
        }
        for (i, step) in steps.iter().enumerate() {
            now += Duration::hours(step.advance_hours);
            if accept(&mut state, command(step, now), now, 3 + i) {
                check_invariants(&state, &policy)?;
            }
        }
        // The stored form of every event decodes and refolds into the same state.
        let events: Vec<Event> = recorded
            .into_iter()
            .map(|r| serde_json::from_str::<RecordedEvent>(&serde_json::to_string(&r).unwrap()).unwrap())
            .map(|r| r.into_envelope().expect("a stored event decodes").event)
            .collect();
        let refolded = events.iter().fold(ArticleState::default(), evolve);
        prop_assert_eq!(&refolded, &state);
        // A reader that keeps no ledger (the projector), dropping it after any
        // prefix, still arrives at every current figure.
        let split = steps.len() % (events.len() + 1);
        let mut reader = ArticleState::default();
        for (i, event) in events.iter().enumerate() {
            if i == split {
                reader = reader.without_ledger();
            }
            reader = try_evolve(reader, event).expect("decided events fold");
        }
        prop_assert_eq!(reader.without_ledger(), state.clone().without_ledger());
        // The snapshot the command-service stores reproduces it too.
        let snapshot: ArticleState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert_eq!(snapshot, state);
    }
}
