//! What a notification on [`JOBS_CHANNEL`](crate::JOBS_CHANNEL) says, written by the persister
//! and read by the [`JobWaiter`](crate::waiter::JobWaiter).
//!
//! The payload is the changed jobs' ids in text form joined by `,`, at most
//! [`MAX_IDS_PER_NOTIFICATION`] of them (PostgreSQL caps a payload at 8000 bytes), so a
//! transaction that changed more sends several. An empty or unreadable payload means "anything
//! may have changed".

use uuid::Uuid;

/// 200 ids of 36 characters and their commas fit well under PostgreSQL's 8000-byte payload.
pub const MAX_IDS_PER_NOTIFICATION: usize = 200;

/// What a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    Jobs(Vec<Uuid>),
    Anything,
}

/// The payloads announcing that `ids` changed, one per [`MAX_IDS_PER_NOTIFICATION`].
pub fn payloads(ids: &[Uuid]) -> Vec<String> {
    ids.chunks(MAX_IDS_PER_NOTIFICATION)
        .map(|chunk| {
            chunk
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

pub fn parse(payload: &str) -> Changed {
    if payload.trim().is_empty() {
        return Changed::Anything;
    }
    payload
        .split(',')
        .map(|id| id.trim().parse())
        .collect::<Result<Vec<Uuid>, _>>()
        .map_or(Changed::Anything, Changed::Jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_out_in_chunks_and_come_back() {
        let ids: Vec<Uuid> = (0..450).map(|_| Uuid::new_v4()).collect();
        let sent = payloads(&ids);
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|p| p.len() < 8000));
        let back: Vec<Uuid> = sent
            .iter()
            .flat_map(|p| match parse(p) {
                Changed::Jobs(ids) => ids,
                Changed::Anything => panic!("{p} not understood"),
            })
            .collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn an_empty_or_unreadable_payload_means_anything() {
        assert_eq!(parse(""), Changed::Anything);
        assert_eq!(parse("not-an-id"), Changed::Anything);
        let id = Uuid::new_v4();
        assert_eq!(parse(&format!("{id},junk")), Changed::Anything);
        assert_eq!(parse(&id.to_string()), Changed::Jobs(vec![id]));
    }
}
