//! One given/when/then test per rule of the domain.

mod common;

use common::*;
use events::*;

fn only(events: Vec<Event>) -> Event {
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().unwrap()
}

#[test]
fn an_issue_beyond_available_stock_is_refused_with_the_numbers() {
    let state = given(vec![receipt("C1", "W1", 5, None)]);
    assert_eq!(
        when(&state, issue("C1", "W1", 6, None)),
        Err(DomainError::InsufficientStock { charge: charge("C1"), warehouse: wh("W1"), available: 5, requested: 6 })
    );
    assert!(when(&state, issue("C1", "W1", 5, None)).is_ok());
}

#[test]
fn stock_is_counted_per_warehouse() {
    let state = given(vec![receipt("C1", "W1", 5, None)]);
    assert!(matches!(
        when(&state, issue("C1", "W2", 1, None)),
        Err(DomainError::InsufficientStock { available: 0, requested: 1, .. })
    ));
}

#[test]
fn reserved_stock_is_not_available_to_issue_transfer_or_reserve() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 7)]);
    let insufficient = Err(DomainError::InsufficientStock {
        charge: charge("C1"),
        warehouse: wh("W1"),
        available: 3,
        requested: 4,
    });
    assert_eq!(when(&state, issue("C1", "W1", 4, None)), insufficient);
    assert_eq!(when(&state, transfer("C1", "W1", "W2", 4)), insufficient);
    assert_eq!(when(&state, reserve("R2", "C1", "W1", 4)), insufficient);
    assert_eq!(state.bucket(&charge("C1"), &wh("W1")).available(), 3);
}

#[test]
fn a_warehouse_that_allows_negative_stock_accepts_issues_beyond_available() {
    let policy = Policy { negative_stock_warehouses: [wh("W-NEG")].into() };
    let state = given_with(&policy, vec![register(), register_charge("C1", None), receipt("C1", "W-NEG", 2, None)]);
    let Event::StockIssued(e) = only(when_with(&policy, &state, issue("C1", "W-NEG", 5, None)).unwrap()) else {
        panic!("an issue")
    };
    assert_eq!(e.on_hand_after, -3);
    // The same issue elsewhere is refused.
    assert!(when_with(&policy, &given(vec![receipt("C1", "W1", 2, None)]), issue("C1", "W1", 5, None)).is_err());
}

#[test]
fn a_transfer_moves_both_sides_in_one_event() {
    let state = given(vec![receipt("C1", "W1", 10, None)]);
    let events = when(&state, transfer("C1", "W1", "W2", 4)).unwrap();
    let Event::StockTransferred(e) = only(events.clone()) else { panic!("a transfer") };
    assert_eq!((e.from_on_hand_after, e.to_on_hand_after), (6, 4));
    let after = events.iter().fold(state, evolve);
    assert_eq!(after.bucket(&charge("C1"), &wh("W1")).on_hand, 6);
    assert_eq!(after.bucket(&charge("C1"), &wh("W2")).on_hand, 4);
}

#[test]
fn a_transfer_needs_two_different_warehouses() {
    let state = given(vec![receipt("C1", "W1", 10, None)]);
    assert_eq!(when(&state, transfer("C1", "W1", "W1", 1)), Err(DomainError::SameWarehouse { warehouse: wh("W1") }));
}

#[test]
fn a_backdated_issue_must_not_make_a_later_balance_negative() {
    // Day -10: +10, day -5: -8 (balance 2), day -1: +20 (balance 22, all of it
    // available now). Issuing 3 on day -7 is fine then (balance 7) but makes
    // day -5 end at -1.
    let state = given(vec![
        receipt("C1", "W1", 10, Some(days_ago(10))),
        issue("C1", "W1", 8, Some(days_ago(5))),
        receipt("C1", "W1", 20, Some(days_ago(1))),
    ]);
    assert_eq!(
        when(&state, issue("C1", "W1", 2, Some(days_ago(7)))).map(|e| e.len()),
        Ok(1),
        "2 leaves every balance at 0 or more"
    );
    assert_eq!(
        when(&state, issue("C1", "W1", 3, Some(days_ago(7)))),
        Err(DomainError::LaterBalanceNegative {
            charge: charge("C1"),
            warehouse: wh("W1"),
            posted_at: days_ago(7),
            at: days_ago(5),
            balance: -1,
        })
    );
}

#[test]
fn an_issue_cannot_be_posted_before_the_stock_arrived() {
    let state = given(vec![receipt("C1", "W1", 10, Some(days_ago(2)))]);
    assert!(matches!(
        when(&state, issue("C1", "W1", 1, Some(days_ago(3)))),
        Err(DomainError::LaterBalanceNegative { balance: -1, .. })
    ));
}

#[test]
fn a_backdated_receipt_records_the_balance_at_its_posting_time_and_the_current_one() {
    let state = given(vec![receipt("C1", "W1", 10, Some(days_ago(10))), issue("C1", "W1", 8, Some(days_ago(5)))]);
    let Event::StockReceived(e) = only(when(&state, receipt("C1", "W1", 5, Some(days_ago(7)))).unwrap()) else {
        panic!("a receipt")
    };
    assert_eq!((e.balance_at_posting, e.on_hand_after), (15, 7));
}

#[test]
fn a_movement_cannot_be_posted_before_the_posting_window_or_in_the_future() {
    let state = given(vec![receipt("C1", "W1", 10, None)]);
    assert!(matches!(
        when(&state, receipt("C1", "W1", 1, Some(days_ago(31)))),
        Err(DomainError::BackdatedTooFar { .. })
    ));
    assert!(when(&state, receipt("C1", "W1", 1, Some(days_ago(29)))).is_ok());
    let tomorrow = now() + chrono::Duration::days(1);
    assert_eq!(
        when(&state, receipt("C1", "W1", 1, Some(tomorrow))),
        Err(DomainError::PostedInFuture { posted_at: tomorrow, now: now() })
    );
}

#[test]
fn a_blocked_charge_cannot_be_issued_or_reserved_until_released() {
    let state = given(vec![receipt("C1", "W1", 10, None), block("C1")]);
    let blocked = Err(DomainError::ChargeBlocked { charge: charge("C1"), reason: "mould found".into() });
    assert_eq!(when(&state, issue("C1", "W1", 1, None)), blocked);
    assert_eq!(when(&state, reserve("R1", "C1", "W1", 1)), blocked);
    // It can still be received and moved (e.g. into quarantine).
    assert!(when(&state, receipt("C1", "W1", 1, None)).is_ok());
    assert!(when(&state, transfer("C1", "W1", "QUARANTINE", 10)).is_ok());
    let released = given(vec![
        receipt("C1", "W1", 10, None),
        block("C1"),
        Command::ReleaseCharge(ReleaseCharge { article: article(), charge: charge("C1") }),
    ]);
    assert!(when(&released, issue("C1", "W1", 1, None)).is_ok());
}

#[test]
fn an_expired_charge_cannot_be_issued_or_reserved_but_can_be_issued_backdated_before_expiry() {
    let state = given(vec![register_charge("C2", Some("2026-11-20")), receipt("C2", "W1", 10, Some(days_ago(5)))]);
    assert_eq!(
        when(&state, issue("C2", "W1", 1, None)),
        Err(DomainError::ChargeExpired { charge: charge("C2"), expiry_date: date("2026-11-20"), on: date("2026-11-22") })
    );
    assert!(matches!(when(&state, reserve("R1", "C2", "W1", 1)), Err(DomainError::ChargeExpired { .. })));
    assert!(when(&state, issue("C2", "W1", 1, Some(days_ago(3)))).is_ok(), "posted on 11-19, before expiry");
}

#[test]
fn stock_of_an_unregistered_charge_is_refused() {
    let state = given(vec![]);
    assert_eq!(
        when(&state, receipt("OTHER", "W1", 1, None)),
        Err(DomainError::UnknownCharge { article: article(), charge: charge("OTHER") })
    );
}

#[test]
fn a_charge_number_is_registered_once_per_article() {
    let state = given(vec![]);
    assert_eq!(
        when(&state, register_charge("C1", None)),
        Err(DomainError::ChargeAlreadyRegistered { article: article(), charge: charge("C1") })
    );
}

#[test]
fn a_charge_cannot_expire_before_it_was_produced() {
    let state = given(vec![]);
    assert_eq!(
        when(&state, register_charge("C9", Some("2025-12-31"))),
        Err(DomainError::ExpiryBeforeProduction { production_date: date("2026-01-01"), expiry_date: date("2025-12-31") })
    );
}

#[test]
fn an_unknown_article_accepts_nothing_but_its_registration() {
    let empty = ArticleState::default();
    assert_eq!(when(&empty, receipt("C1", "W1", 1, None)), Err(DomainError::UnknownArticle { article: article() }));
    assert!(when(&empty, register()).is_ok());
    assert_eq!(
        when(&given(vec![]), register()),
        Err(DomainError::ArticleAlreadyRegistered { article: article() })
    );
}

#[test]
fn a_discontinued_article_is_not_received_but_its_stock_can_still_be_issued() {
    let state = given(vec![
        receipt("C1", "W1", 5, None),
        Command::DiscontinueArticle(DiscontinueArticle { article: article() }),
    ]);
    assert_eq!(when(&state, receipt("C1", "W1", 1, None)), Err(DomainError::ArticleDiscontinued { article: article() }));
    assert!(matches!(when(&state, register_charge("C2", None)), Err(DomainError::ArticleDiscontinued { .. })));
    assert!(when(&state, issue("C1", "W1", 5, None)).is_ok());
}

#[test]
fn releasing_or_consuming_more_than_reserved_is_an_error_not_a_clamp() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 4)]);
    let exceeded = Err(DomainError::ReservationExceeded { reservation: rid("R1"), remaining: 4, requested: 5 });
    assert_eq!(when(&state, release("R1", Some(5))), exceeded);
    assert_eq!(when(&state, consume("R1", Some(5))), exceeded);
    assert_eq!(when(&state, release("R9", None)), Err(DomainError::UnknownReservation { reservation: rid("R9") }));
}

#[test]
fn a_released_reservation_gives_its_quantity_back_and_closes_at_zero() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 4), release("R1", Some(1))]);
    assert_eq!(state.bucket(&charge("C1"), &wh("W1")).available(), 7);
    let closed = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 4), release("R1", None)]);
    assert_eq!(closed.bucket(&charge("C1"), &wh("W1")).available(), 10);
    assert!(closed.reservations.is_empty());
    assert!(matches!(when(&closed, release("R1", None)), Err(DomainError::UnknownReservation { .. })));
}

#[test]
fn consuming_a_reservation_issues_the_stock_and_leaves_available_unchanged() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 4)]);
    let events = when(&state, consume("R1", Some(3))).unwrap();
    assert!(matches!(&events[..], [Event::ReservationConsumed(c), Event::StockIssued(i)]
        if c.remaining == 1 && c.reserved_after == 1 && i.on_hand_after == 7 && i.reservation == Some(rid("R1"))));
    let after = events.iter().fold(state, evolve);
    let bucket = after.bucket(&charge("C1"), &wh("W1"));
    assert_eq!((bucket.on_hand, bucket.reserved, bucket.available()), (7, 1, 6));
}

#[test]
fn a_reservation_id_is_used_once_while_open() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 1)]);
    assert_eq!(when(&state, reserve("R1", "C1", "W1", 1)), Err(DomainError::ReservationExists { reservation: rid("R1") }));
}

#[test]
fn an_inventory_count_records_the_counted_quantity_and_the_difference() {
    let state = given(vec![receipt("C1", "W1", 10, None)]);
    let Event::InventoryCounted(e) = only(when(&state, count("C1", "W1", 8, None)).unwrap()) else { panic!("a count") };
    assert_eq!((e.counted, e.delta, e.on_hand_after), (8, -2, 8));
}

#[test]
fn a_backdated_count_shifts_later_balances_and_must_keep_them_non_negative() {
    // +10 on day -10, -8 on day -5. Counting 5 on day -7 (was 10) shifts day -5 to -3.
    let state = given(vec![receipt("C1", "W1", 10, Some(days_ago(10))), issue("C1", "W1", 8, Some(days_ago(5)))]);
    assert!(matches!(
        when(&state, count("C1", "W1", 5, Some(days_ago(7)))),
        Err(DomainError::LaterBalanceNegative { balance: -3, .. })
    ));
    let Event::InventoryCounted(e) = only(when(&state, count("C1", "W1", 9, Some(days_ago(7)))).unwrap()) else {
        panic!("a count")
    };
    assert_eq!((e.delta, e.on_hand_after), (-1, 1));
}

#[test]
fn a_count_below_the_reserved_quantity_is_refused() {
    let state = given(vec![receipt("C1", "W1", 10, None), reserve("R1", "C1", "W1", 6)]);
    assert_eq!(
        when(&state, count("C1", "W1", 5, None)),
        Err(DomainError::CountBelowReserved { charge: charge("C1"), warehouse: wh("W1"), counted: 5, reserved: 6 })
    );
}

#[test]
fn a_balance_beyond_the_bound_is_refused() {
    let state = given((0..1000).map(|_| receipt("C1", "W1", Quantity::MAX, None)).collect());
    assert_eq!(
        when(&state, receipt("C1", "W1", 1, None)),
        Err(DomainError::BalanceOverflow { charge: charge("C1"), warehouse: wh("W1"), max: MAX_BALANCE })
    );
}

#[test]
fn a_quality_result_needs_measurements_and_may_change_the_status() {
    let state = given(vec![]);
    let record = |measurements: Vec<Measurement>| {
        Command::RecordQualityResult(RecordQualityResult {
            article: article(),
            charge: charge("C1"),
            measurements,
            quality_status: Some(QualityStatus::Rejected),
        })
    };
    assert_eq!(when(&state, record(vec![])), Err(DomainError::NoMeasurements));
    let moisture = Measurement {
        name: Text::parse("moisture").unwrap(),
        value: DecimalValue::parse("12.5").unwrap(),
        unit: Some(Text::parse("%").unwrap()),
    };
    let events = when(&state, record(vec![moisture])).unwrap();
    let after = events.iter().fold(state, evolve);
    assert_eq!(after.charges[&charge("C1")].quality_status, QualityStatus::Rejected);
}

#[test]
fn commands_that_change_nothing_produce_no_events() {
    let state = given(vec![block("C1")]);
    assert_eq!(when(&state, block("C1")), Ok(vec![]));
    let same_name =
        Command::RenameArticle(RenameArticle { article: article(), name: ArticleName::parse("Bolt M8").unwrap() });
    assert_eq!(when(&state, same_name), Ok(vec![]));
}

#[test]
fn charge_events_carry_the_articles_current_category() {
    let state = given(vec![Command::ChangeArticleCategory(ChangeArticleCategory {
        article: article(),
        category: Category::parse("screws").unwrap(),
    })]);
    let Event::ChargeRegistered(e) = only(when(&state, register_charge("C2", None)).unwrap()) else { panic!() };
    assert_eq!(e.category.as_str(), "screws");
}

#[test]
fn a_scoped_sender_may_move_stock_only_in_its_warehouses() {
    let state = given(vec![receipt("C1", "W1", 10, None), receipt("C1", "W2", 10, None), reserve("R2", "C1", "W2", 3)]);
    let north = Scope::Only([wh("W1")].into());
    let permit = |command| when(&state, command).and_then(|events| north.permit(events));
    let refused = |w: &str| Err(DomainError::WarehouseNotPermitted { warehouse: wh(w) });
    assert!(permit(issue("C1", "W1", 1, None)).is_ok());
    assert_eq!(permit(issue("C1", "W2", 1, None)), refused("W2"));
    // A transfer touches both sides: neither into nor out of another warehouse.
    assert_eq!(permit(transfer("C1", "W1", "W2", 1)), refused("W2"));
    assert_eq!(permit(transfer("C1", "W2", "W1", 1)), refused("W2"));
    // A reservation is judged by the warehouse it holds stock in, even when
    // the command does not name it.
    assert_eq!(permit(release("R2", None)), refused("W2"));
    assert_eq!(permit(consume("R2", Some(1))), refused("W2"));
    // Master data touches no warehouse; an unscoped sender goes everywhere.
    assert!(permit(block("C1")).is_ok());
    assert!(when(&state, issue("C1", "W2", 1, None)).and_then(|e| Scope::Everywhere.permit(e)).is_ok());
}
