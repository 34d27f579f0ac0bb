//! The Ordinal client SDK. The network client arrives with the node issue; what exists now is
//! receipt verification, which needs nothing but the cluster's keys.

pub use ordinal_consensus::receipt::{Receipt, ReceiptError};
