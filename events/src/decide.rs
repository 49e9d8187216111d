//! Every business rule, in one pure function.

use crate::{ArticleState, Command, DomainError, Event, Quantity, StockReceived};

/// Decides what a command means for the article it addresses: the events to
/// append, or the rule it breaks. Pure: the same state and command give the
/// same answer.
pub fn decide(state: &ArticleState, command: Command) -> Result<Vec<Event>, DomainError> {
    match command {
        Command::PostReceipt(c) => {
            let level = state.level(&c.charge, &c.warehouse);
            let on_hand_after = level
                .on_hand
                .checked_add(c.quantity.get())
                .filter(|b| *b <= MAX_BALANCE)
                .ok_or_else(|| DomainError::BalanceOverflow {
                    charge: c.charge.to_string(),
                    warehouse: c.warehouse.to_string(),
                    max: MAX_BALANCE,
                })?;
            Ok(vec![Event::StockReceived(StockReceived {
                article: c.article,
                charge: c.charge,
                warehouse: c.warehouse,
                quantity: c.quantity,
                on_hand_after,
            })])
        }
    }
}

/// Largest balance of one charge in one warehouse: a thousand maximal receipts.
pub const MAX_BALANCE: i64 = Quantity::MAX * 1000;

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{ArticleId, ChargeNo, PostReceipt, WarehouseId, evolve};

    fn receipt(qty: i64) -> Command {
        Command::PostReceipt(PostReceipt {
            article: ArticleId::parse("A1").unwrap(),
            charge: ChargeNo::parse("C1").unwrap(),
            warehouse: WarehouseId::parse("W1").unwrap(),
            quantity: Quantity::new(qty).unwrap(),
            posted_at: Utc::now(),
        })
    }

    fn given(commands: Vec<Command>) -> ArticleState {
        commands.into_iter().fold(ArticleState::default(), |s, c| {
            decide(&s, c).unwrap().iter().fold(s, evolve)
        })
    }

    #[test]
    fn a_receipt_adds_to_on_hand_and_records_the_balance_after() {
        let state = given(vec![receipt(5)]);
        let events = decide(&state, receipt(7)).unwrap();
        let Event::StockReceived(e) = &events[0];
        assert_eq!(e.on_hand_after, 12);
        let state = events.iter().fold(state, evolve);
        let level = state.level(&ChargeNo::parse("C1").unwrap(), &WarehouseId::parse("W1").unwrap());
        assert_eq!(level.on_hand, 12);
        assert_eq!(state.version, 2);
    }

    #[test]
    fn a_receipt_beyond_the_balance_bound_is_refused() {
        let state = given((0..1000).map(|_| receipt(Quantity::MAX)).collect());
        assert!(matches!(
            decide(&state, receipt(1)),
            Err(DomainError::BalanceOverflow { max: MAX_BALANCE, .. })
        ));
    }
}
