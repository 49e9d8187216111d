//! What write clients ask for. A command is already valid field by field (ids,
//! quantities, texts are typed); whether it is allowed is for [`crate::decide`].

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ArticleId, ArticleName, Category, ChargeNo, Counted, Measurement, QualityStatus, Quantity, ReservationId, Text,
    Unit, WarehouseId,
};

/// Every command. Each is addressed to exactly one article stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    RegisterArticle(RegisterArticle),
    RenameArticle(RenameArticle),
    ChangeArticleCategory(ChangeArticleCategory),
    SetReorderPoint(SetReorderPoint),
    DiscontinueArticle(DiscontinueArticle),
    RegisterCharge(RegisterCharge),
    RecordQualityResult(RecordQualityResult),
    BlockCharge(BlockCharge),
    ReleaseCharge(ReleaseCharge),
    PostReceipt(PostReceipt),
    PostIssue(PostIssue),
    TransferStock(TransferStock),
    CountInventory(CountInventory),
    ReserveStock(ReserveStock),
    ReleaseReservation(ReleaseReservation),
    ConsumeReservation(ConsumeReservation),
}

impl Command {
    /// The article whose stream decides this command.
    pub fn article(&self) -> &ArticleId {
        match self {
            Command::RegisterArticle(c) => &c.article,
            Command::RenameArticle(c) => &c.article,
            Command::ChangeArticleCategory(c) => &c.article,
            Command::SetReorderPoint(c) => &c.article,
            Command::DiscontinueArticle(c) => &c.article,
            Command::RegisterCharge(c) => &c.article,
            Command::RecordQualityResult(c) => &c.article,
            Command::BlockCharge(c) => &c.article,
            Command::ReleaseCharge(c) => &c.article,
            Command::PostReceipt(c) => &c.article,
            Command::PostIssue(c) => &c.article,
            Command::TransferStock(c) => &c.article,
            Command::CountInventory(c) => &c.article,
            Command::ReserveStock(c) => &c.article,
            Command::ReleaseReservation(c) => &c.article,
            Command::ConsumeReservation(c) => &c.article,
        }
    }

    /// The business time a stock movement asks for; `None` for commands that are
    /// not movements or that post now.
    pub fn posted_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Command::PostReceipt(c) => c.posted_at,
            Command::PostIssue(c) => c.posted_at,
            Command::TransferStock(c) => c.posted_at,
            Command::CountInventory(c) => c.posted_at,
            Command::ConsumeReservation(c) => c.posted_at,
            _ => None,
        }
    }

    /// Stable name of the command, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterArticle(_) => "RegisterArticle",
            Command::RenameArticle(_) => "RenameArticle",
            Command::ChangeArticleCategory(_) => "ChangeArticleCategory",
            Command::SetReorderPoint(_) => "SetReorderPoint",
            Command::DiscontinueArticle(_) => "DiscontinueArticle",
            Command::RegisterCharge(_) => "RegisterCharge",
            Command::RecordQualityResult(_) => "RecordQualityResult",
            Command::BlockCharge(_) => "BlockCharge",
            Command::ReleaseCharge(_) => "ReleaseCharge",
            Command::PostReceipt(_) => "PostReceipt",
            Command::PostIssue(_) => "PostIssue",
            Command::TransferStock(_) => "TransferStock",
            Command::CountInventory(_) => "CountInventory",
            Command::ReserveStock(_) => "ReserveStock",
            Command::ReleaseReservation(_) => "ReleaseReservation",
            Command::ConsumeReservation(_) => "ConsumeReservation",
        }
    }
}

/// A new article (Artikel) enters the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterArticle {
    pub article: ArticleId,
    pub name: ArticleName,
    pub category: Category,
    pub unit: Unit,
    /// Available stock below this counts as low stock.
    pub reorder_point: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameArticle {
    pub article: ArticleId,
    pub name: ArticleName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeArticleCategory {
    pub article: ArticleId,
    pub category: Category,
}

/// Sets (or with `None` removes) the reorder point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetReorderPoint {
    pub article: ArticleId,
    pub reorder_point: Option<Quantity>,
}

/// The article is no longer received; remaining stock can still be issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscontinueArticle {
    pub article: ArticleId,
}

/// A charge (lot, batch) of the article is produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterCharge {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub production_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    pub quality_status: QualityStatus,
}

/// Results of a quality analysis (Qualitätsanalyse) of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordQualityResult {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub measurements: Vec<Measurement>,
    /// The charge's quality status after this analysis; unchanged when `None`.
    pub quality_status: Option<QualityStatus>,
}

/// Puts a charge on quality hold: it can no longer be issued or reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCharge {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub reason: Text,
}

/// Lifts a quality hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseCharge {
    pub article: ArticleId,
    pub charge: ChargeNo,
}

/// Goods of one charge arrive in a warehouse (Wareneingang).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostReceipt {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    /// Business time; now when `None`. May lie in the past (backdating).
    pub posted_at: Option<DateTime<Utc>>,
}

/// Goods of one charge leave a warehouse (Warenausgang).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostIssue {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    pub posted_at: Option<DateTime<Utc>>,
}

/// Moves part of a charge from one warehouse to another, both sides or neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStock {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub from: WarehouseId,
    pub to: WarehouseId,
    pub quantity: Quantity,
    pub posted_at: Option<DateTime<Utc>>,
}

/// A physical count (Inventur): the counted quantity replaces the balance at
/// the posting time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountInventory {
    pub article: ArticleId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub counted: Counted,
    pub posted_at: Option<DateTime<Utc>>,
}

/// Reserves part of a charge in a warehouse for a reference (e.g. an order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub charge: ChargeNo,
    pub warehouse: WarehouseId,
    pub quantity: Quantity,
    pub reference: Text,
}

/// Gives back part (or, with `None`, all) of what a reservation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReservation {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub quantity: Option<Quantity>,
}

/// Issues part (or, with `None`, all) of what a reservation holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeReservation {
    pub article: ArticleId,
    pub reservation: ReservationId,
    pub quantity: Option<Quantity>,
    pub posted_at: Option<DateTime<Utc>>,
}
