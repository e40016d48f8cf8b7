//! What the store's calls cost DynamoDB, as the service reports it
//! (`ReturnConsumedCapacity=TOTAL`). Only the benchmarks count it (feature `metering`); in the
//! functions the meter is empty and its calls compile to nothing.

use aws_sdk_dynamodb::types::ConsumedCapacity;

#[derive(Clone, Copy)]
pub(super) enum Work {
    Read,
    Write,
}

#[cfg(feature = "metering")]
pub use counting::{Consumption, Meter};

#[cfg(feature = "metering")]
mod counting {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{ConsumedCapacity, Work};

    /// DynamoDB work done by a store.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct Consumption {
        pub read_units: f64,
        pub write_units: f64,
        /// Items the service read (a `Query`'s scanned count, a `GetItem`'s hit).
        pub items_read: u64,
        pub calls: u64,
    }

    #[derive(Debug, Default)]
    pub struct Meter {
        read_milli: AtomicU64,
        write_milli: AtomicU64,
        items_read: AtomicU64,
        calls: AtomicU64,
    }

    impl Meter {
        pub(in crate::store) fn record<'a>(
            &self,
            work: Work,
            consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
        ) {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let units: f64 = consumed
                .into_iter()
                .filter_map(ConsumedCapacity::capacity_units)
                .sum();
            let milli = (units * 1_000.0).round() as u64;
            let counter = match work {
                Work::Read => &self.read_milli,
                Work::Write => &self.write_milli,
            };
            counter.fetch_add(milli, Ordering::Relaxed);
        }

        pub(in crate::store) fn items(&self, count: u64) {
            self.items_read.fetch_add(count, Ordering::Relaxed);
        }

        pub(in crate::store) fn consumption(&self) -> Consumption {
            let milli = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64 / 1_000.0;
            Consumption {
                read_units: milli(&self.read_milli),
                write_units: milli(&self.write_milli),
                items_read: self.items_read.load(Ordering::Relaxed),
                calls: self.calls.load(Ordering::Relaxed),
            }
        }
    }
}

/// The functions' meter: counts nothing.
#[cfg(not(feature = "metering"))]
#[derive(Debug, Default)]
pub(super) struct Meter {}

#[cfg(not(feature = "metering"))]
impl Meter {
    #[inline(always)]
    pub(super) fn record<'a>(
        &self,
        _work: Work,
        _consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
    }

    #[inline(always)]
    pub(super) fn items(&self, _count: u64) {}
}

/// Records a `Query`'s work: its capacity and the items it read.
pub(super) fn record_query(
    meter: &Meter,
    output: &aws_sdk_dynamodb::operation::query::QueryOutput,
) {
    meter.record(Work::Read, output.consumed_capacity());
    meter.items(u64::try_from(output.scanned_count()).unwrap_or(0));
}

/// What the store asks DynamoDB to report with each call: the consumed capacity when metering,
/// nothing otherwise.
pub(super) fn ask() -> aws_sdk_dynamodb::types::ReturnConsumedCapacity {
    if cfg!(feature = "metering") {
        aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total
    } else {
        aws_sdk_dynamodb::types::ReturnConsumedCapacity::None
    }
}
