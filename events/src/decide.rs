//! Every business rule, in one pure function.

use chrono::{DateTime, SubsecRound, Utc};

use crate::event::*;
use crate::state::{ArticleInfo, Bucket, ChargeState};
use crate::{
    ArticleId, ArticleState, ChargeNo, Command, Context, DomainError, FUTURE_TOLERANCE, POSTING_WINDOW, Quantity,
    WarehouseId, command::*,
};

/// Largest balance of one charge in one warehouse: a thousand maximal receipts.
pub const MAX_BALANCE: i64 = Quantity::MAX * 1000;

/// Decides what a command means for the article it addresses: the events to
/// append (none when it changes nothing), or the rule it breaks. Pure: the same
/// state, command and context give the same answer.
pub fn decide(state: &ArticleState, command: Command, ctx: &Context<'_>) -> Result<Vec<Event>, DomainError> {
    let d = Decider { state, ctx };
    match command {
        Command::RegisterArticle(c) => d.register_article(c),
        Command::RenameArticle(c) => d.rename_article(c),
        Command::ChangeArticleCategory(c) => d.change_category(c),
        Command::SetReorderPoint(c) => d.set_reorder_point(c),
        Command::DiscontinueArticle(c) => d.discontinue(c),
        Command::RegisterCharge(c) => d.register_charge(c),
        Command::RecordQualityResult(c) => d.record_quality(c),
        Command::BlockCharge(c) => d.block(c),
        Command::ReleaseCharge(c) => d.release(c),
        Command::PostReceipt(c) => d.receipt(c),
        Command::PostIssue(c) => d.issue(c),
        Command::TransferStock(c) => d.transfer(c),
        Command::CountInventory(c) => d.count(c),
        Command::ReserveStock(c) => d.reserve(c),
        Command::ReleaseReservation(c) => d.release_reservation(c),
        Command::ConsumeReservation(c) => d.consume(c),
    }
}

struct Decider<'a> {
    state: &'a ArticleState,
    ctx: &'a Context<'a>,
}

type Decided = Result<Vec<Event>, DomainError>;

impl Decider<'_> {
    fn article(&self, id: &ArticleId) -> Result<&ArticleInfo, DomainError> {
        self.state.article.as_ref().ok_or_else(|| DomainError::UnknownArticle { article: id.clone() })
    }

    /// A registered, not discontinued article.
    fn active_article(&self, id: &ArticleId) -> Result<&ArticleInfo, DomainError> {
        let info = self.article(id)?;
        if info.discontinued {
            return Err(DomainError::ArticleDiscontinued { article: id.clone() });
        }
        Ok(info)
    }

    fn charge(&self, article: &ArticleId, charge: &ChargeNo) -> Result<&ChargeState, DomainError> {
        self.article(article)?;
        self.state
            .charges
            .get(charge)
            .ok_or_else(|| DomainError::UnknownCharge { article: article.clone(), charge: charge.clone() })
    }

    /// A charge that may be issued or reserved at `at`: not blocked, not expired.
    fn usable_charge(&self, article: &ArticleId, charge: &ChargeNo, at: DateTime<Utc>) -> Result<(), DomainError> {
        let state = self.charge(article, charge)?;
        if let Some(reason) = &state.blocked {
            return Err(DomainError::ChargeBlocked { charge: charge.clone(), reason: reason.to_string() });
        }
        if let Some(expiry_date) = state.expiry_date {
            let on = at.date_naive();
            if on > expiry_date {
                return Err(DomainError::ChargeExpired { charge: charge.clone(), expiry_date, on });
            }
        }
        Ok(())
    }

    /// The posting time of a movement: now by default; not in the future; not
    /// before the open posting window.
    fn posting_time(&self, requested: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, DomainError> {
        let now = self.ctx.now;
        // Kept to the microsecond, the precision every store of events has.
        let posted_at = requested.unwrap_or(now).trunc_subsecs(6);
        if posted_at > now + FUTURE_TOLERANCE {
            return Err(DomainError::PostedInFuture { posted_at, now });
        }
        let earliest = self.state.horizon().map_or(now - POSTING_WINDOW, |h| h.max(now - POSTING_WINDOW));
        if posted_at < earliest {
            return Err(DomainError::BackdatedTooFar { posted_at, earliest });
        }
        Ok(posted_at)
    }

    /// Takes `quantity` out of a bucket at `posted_at`: limited by available
    /// stock now, and by every balance from the posting time on, unless the
    /// warehouse allows negative stock. Returns (balance at posting, on hand after).
    fn take_out(
        &self,
        charge: &ChargeNo,
        warehouse: &WarehouseId,
        quantity: i64,
        posted_at: DateTime<Utc>,
        check_available: bool,
    ) -> Result<(i64, i64), DomainError> {
        let bucket = self.state.bucket(charge, warehouse);
        if !self.ctx.policy.allows_negative(warehouse) {
            if check_available && bucket.available() < quantity {
                return Err(DomainError::InsufficientStock {
                    charge: charge.clone(),
                    warehouse: warehouse.clone(),
                    available: bucket.available(),
                    requested: quantity,
                });
            }
            check_later_balances(bucket, charge, warehouse, posted_at, -quantity)?;
        }
        Ok((bucket.balance_at(posted_at) - quantity, bucket.on_hand - quantity))
    }

    /// Puts `quantity` into a bucket at `posted_at`. Returns (balance at posting, on hand after).
    fn put_in(
        &self,
        charge: &ChargeNo,
        warehouse: &WarehouseId,
        quantity: i64,
        posted_at: DateTime<Utc>,
    ) -> Result<(i64, i64), DomainError> {
        let bucket = self.state.bucket(charge, warehouse);
        let on_hand_after = bucket.on_hand + quantity;
        if on_hand_after > MAX_BALANCE {
            return Err(DomainError::BalanceOverflow {
                charge: charge.clone(),
                warehouse: warehouse.clone(),
                max: MAX_BALANCE,
            });
        }
        Ok((bucket.balance_at(posted_at) + quantity, on_hand_after))
    }

    fn register_article(&self, c: RegisterArticle) -> Decided {
        if self.state.article.is_some() {
            return Err(DomainError::ArticleAlreadyRegistered { article: c.article });
        }
        Ok(vec![Event::ArticleRegistered(ArticleRegistered {
            article: c.article,
            name: c.name,
            category: c.category,
            unit: c.unit,
            reorder_point: c.reorder_point,
        })])
    }

    fn rename_article(&self, c: RenameArticle) -> Decided {
        if self.article(&c.article)?.name == c.name {
            return Ok(vec![]);
        }
        Ok(vec![Event::ArticleRenamed(ArticleRenamed { article: c.article, name: c.name })])
    }

    fn change_category(&self, c: ChangeArticleCategory) -> Decided {
        let from = self.article(&c.article)?.category.clone();
        if from == c.category {
            return Ok(vec![]);
        }
        Ok(vec![Event::ArticleCategoryChanged(ArticleCategoryChanged { article: c.article, from, to: c.category })])
    }

    fn set_reorder_point(&self, c: SetReorderPoint) -> Decided {
        if self.article(&c.article)?.reorder_point == c.reorder_point {
            return Ok(vec![]);
        }
        Ok(vec![Event::ReorderPointChanged(ReorderPointChanged { article: c.article, reorder_point: c.reorder_point })])
    }

    fn discontinue(&self, c: DiscontinueArticle) -> Decided {
        if self.article(&c.article)?.discontinued {
            return Ok(vec![]);
        }
        Ok(vec![Event::ArticleDiscontinued(ArticleDiscontinued { article: c.article })])
    }

    fn register_charge(&self, c: RegisterCharge) -> Decided {
        let category = self.active_article(&c.article)?.category.clone();
        if self.state.charges.contains_key(&c.charge) {
            return Err(DomainError::ChargeAlreadyRegistered { article: c.article, charge: c.charge });
        }
        if let Some(expiry_date) = c.expiry_date.filter(|e| *e < c.production_date) {
            return Err(DomainError::ExpiryBeforeProduction { production_date: c.production_date, expiry_date });
        }
        Ok(vec![Event::ChargeRegistered(ChargeRegistered {
            article: c.article,
            category,
            charge: c.charge,
            production_date: c.production_date,
            expiry_date: c.expiry_date,
            quality_status: c.quality_status,
        })])
    }

    fn record_quality(&self, c: RecordQualityResult) -> Decided {
        let charge = self.charge(&c.article, &c.charge)?;
        if c.measurements.is_empty() {
            return Err(DomainError::NoMeasurements);
        }
        Ok(vec![Event::QualityResultRecorded(QualityResultRecorded {
            category: self.article(&c.article)?.category.clone(),
            quality_status: c.quality_status.unwrap_or(charge.quality_status),
            article: c.article,
            charge: c.charge,
            measurements: c.measurements,
        })])
    }

    fn block(&self, c: BlockCharge) -> Decided {
        if self.charge(&c.article, &c.charge)?.blocked.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![Event::ChargeBlocked(ChargeBlocked {
            category: self.article(&c.article)?.category.clone(),
            article: c.article,
            charge: c.charge,
            reason: c.reason,
        })])
    }

    fn release(&self, c: ReleaseCharge) -> Decided {
        if self.charge(&c.article, &c.charge)?.blocked.is_none() {
            return Ok(vec![]);
        }
        Ok(vec![Event::ChargeReleased(ChargeReleased {
            category: self.article(&c.article)?.category.clone(),
            article: c.article,
            charge: c.charge,
        })])
    }

    fn receipt(&self, c: PostReceipt) -> Decided {
        self.active_article(&c.article)?;
        self.charge(&c.article, &c.charge)?;
        let posted_at = self.posting_time(c.posted_at)?;
        let (balance_at_posting, on_hand_after) = self.put_in(&c.charge, &c.warehouse, c.quantity.get(), posted_at)?;
        Ok(vec![Event::StockReceived(StockReceived {
            article: c.article,
            charge: c.charge,
            warehouse: c.warehouse,
            quantity: c.quantity,
            posted_at,
            balance_at_posting,
            on_hand_after,
        })])
    }

    fn issue(&self, c: PostIssue) -> Decided {
        let posted_at = self.posting_time(c.posted_at)?;
        self.usable_charge(&c.article, &c.charge, posted_at)?;
        let (balance_at_posting, on_hand_after) =
            self.take_out(&c.charge, &c.warehouse, c.quantity.get(), posted_at, true)?;
        Ok(vec![Event::StockIssued(StockIssued {
            article: c.article,
            charge: c.charge,
            warehouse: c.warehouse,
            quantity: c.quantity,
            posted_at,
            balance_at_posting,
            on_hand_after,
            reservation: None,
        })])
    }

    fn transfer(&self, c: TransferStock) -> Decided {
        self.charge(&c.article, &c.charge)?;
        if c.from == c.to {
            return Err(DomainError::SameWarehouse { warehouse: c.from });
        }
        let posted_at = self.posting_time(c.posted_at)?;
        let q = c.quantity.get();
        let (from_balance_at_posting, from_on_hand_after) = self.take_out(&c.charge, &c.from, q, posted_at, true)?;
        let (to_balance_at_posting, to_on_hand_after) = self.put_in(&c.charge, &c.to, q, posted_at)?;
        Ok(vec![Event::StockTransferred(StockTransferred {
            article: c.article,
            charge: c.charge,
            from: c.from,
            to: c.to,
            quantity: c.quantity,
            posted_at,
            from_balance_at_posting,
            from_on_hand_after,
            to_balance_at_posting,
            to_on_hand_after,
        })])
    }

    fn count(&self, c: CountInventory) -> Decided {
        self.charge(&c.article, &c.charge)?;
        let posted_at = self.posting_time(c.posted_at)?;
        let bucket = self.state.bucket(&c.charge, &c.warehouse);
        let counted = c.counted.get();
        let delta = counted - bucket.balance_at(posted_at);
        let on_hand_after = bucket.on_hand + delta;
        if on_hand_after > MAX_BALANCE {
            return Err(DomainError::BalanceOverflow { charge: c.charge, warehouse: c.warehouse, max: MAX_BALANCE });
        }
        if !self.ctx.policy.allows_negative(&c.warehouse) {
            check_later_balances(bucket, &c.charge, &c.warehouse, posted_at, delta)?;
        }
        if on_hand_after < bucket.reserved {
            return Err(DomainError::CountBelowReserved {
                charge: c.charge,
                warehouse: c.warehouse,
                counted,
                reserved: bucket.reserved,
            });
        }
        Ok(vec![Event::InventoryCounted(InventoryCounted {
            article: c.article,
            charge: c.charge,
            warehouse: c.warehouse,
            counted,
            delta,
            posted_at,
            on_hand_after,
        })])
    }

    fn reserve(&self, c: ReserveStock) -> Decided {
        self.usable_charge(&c.article, &c.charge, self.ctx.now)?;
        if self.state.reservations.contains_key(&c.reservation) {
            return Err(DomainError::ReservationExists { reservation: c.reservation });
        }
        let bucket = self.state.bucket(&c.charge, &c.warehouse);
        let q = c.quantity.get();
        if !self.ctx.policy.allows_negative(&c.warehouse) && bucket.available() < q {
            return Err(DomainError::InsufficientStock {
                charge: c.charge,
                warehouse: c.warehouse,
                available: bucket.available(),
                requested: q,
            });
        }
        Ok(vec![Event::StockReserved(StockReserved {
            article: c.article,
            reservation: c.reservation,
            charge: c.charge,
            warehouse: c.warehouse,
            reference: c.reference,
            quantity: c.quantity,
            reserved_after: bucket.reserved + q,
        })])
    }

    /// The open reservation and the quantity taken from it (all when `None`).
    fn from_reservation(
        &self,
        article: &ArticleId,
        id: &crate::ReservationId,
        quantity: Option<Quantity>,
    ) -> Result<(&crate::state::Reservation, Quantity), DomainError> {
        self.article(article)?;
        let r = self
            .state
            .reservations
            .get(id)
            .ok_or_else(|| DomainError::UnknownReservation { reservation: id.clone() })?;
        let q = match quantity {
            Some(q) => q,
            None => Quantity::new(r.remaining).expect("open reservations hold a positive quantity"),
        };
        if q.get() > r.remaining {
            return Err(DomainError::ReservationExceeded {
                reservation: id.clone(),
                remaining: r.remaining,
                requested: q.get(),
            });
        }
        Ok((r, q))
    }

    fn release_reservation(&self, c: ReleaseReservation) -> Decided {
        let (r, q) = self.from_reservation(&c.article, &c.reservation, c.quantity)?;
        let bucket = self.state.bucket(&r.charge, &r.warehouse);
        Ok(vec![Event::ReservationReleased(ReservationReleased {
            article: c.article,
            reservation: c.reservation,
            charge: r.charge.clone(),
            warehouse: r.warehouse.clone(),
            quantity: q,
            remaining: r.remaining - q.get(),
            reserved_after: bucket.reserved - q.get(),
        })])
    }

    fn consume(&self, c: ConsumeReservation) -> Decided {
        let (r, q) = self.from_reservation(&c.article, &c.reservation, c.quantity)?;
        let posted_at = self.posting_time(c.posted_at)?;
        self.usable_charge(&c.article, &r.charge, posted_at)?;
        // The reserved quantity is already set aside: available stock is not
        // checked again, but the balances over time still are.
        let (balance_at_posting, on_hand_after) = self.take_out(&r.charge, &r.warehouse, q.get(), posted_at, false)?;
        let bucket = self.state.bucket(&r.charge, &r.warehouse);
        Ok(vec![
            Event::ReservationConsumed(ReservationConsumed {
                article: c.article.clone(),
                reservation: c.reservation.clone(),
                charge: r.charge.clone(),
                warehouse: r.warehouse.clone(),
                quantity: q,
                remaining: r.remaining - q.get(),
                reserved_after: bucket.reserved - q.get(),
            }),
            Event::StockIssued(StockIssued {
                article: c.article,
                charge: r.charge.clone(),
                warehouse: r.warehouse.clone(),
                quantity: q,
                posted_at,
                balance_at_posting,
                on_hand_after,
                reservation: Some(c.reservation),
            }),
        ])
    }
}

/// A movement of `delta` at `posted_at` must leave the balance at that time,
/// and every later balance, non-negative.
fn check_later_balances(
    bucket: &Bucket,
    charge: &ChargeNo,
    warehouse: &WarehouseId,
    posted_at: DateTime<Utc>,
    delta: i64,
) -> Result<(), DomainError> {
    let at_posting = (posted_at, bucket.balance_at(posted_at));
    let lowest = bucket.lowest_after(posted_at).map_or(at_posting, |later| {
        if later.1 < at_posting.1 { later } else { at_posting }
    });
    if lowest.1 + delta < 0 {
        return Err(DomainError::LaterBalanceNegative {
            charge: charge.clone(),
            warehouse: warehouse.clone(),
            posted_at,
            at: lowest.0,
            balance: lowest.1 + delta,
        });
    }
    Ok(())
}
