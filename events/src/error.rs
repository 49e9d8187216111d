//! Why a command was refused. Each variant is one rule and carries its numbers.

/// A command that breaks a rule of the domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the balance of charge {charge} in {warehouse} would exceed the bound {max}")]
    BalanceOverflow { charge: String, warehouse: String, max: i64 },
}

impl DomainError {
    /// A short, stable, machine-readable name for the rule (used in problem+json).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::BalanceOverflow { .. } => "balance-overflow",
        }
    }
}
