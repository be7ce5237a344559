//! One partition's side of delivery from the leader.
//!
//! Every replica applies every committed message, but only the leader delivers it. A replica
//! that becomes leader cannot know which of the last commits its predecessor delivered before
//! it died (delivery is not replicated), so every replica keeps the messages it applied in the
//! last `RECENT` and a new leader delivers those again. Clients de-duplicate by
//! `(channel_id, seq)`; what falls outside the window still reaches every device at its next
//! catch-up, as the delivery guarantee says.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::CommitSink;
use crate::model::MessageRecord;

/// How far back a new leader delivers again.
pub const RECENT: Duration = Duration::from_secs(10);
/// How far back a leader handed the group by a live predecessor delivers again: longer than
/// a hand-over takes (openraft waits at most an election timeout, 1 s, for the successor's
/// log).
pub const HANDED_OVER_RECENT: Duration = Duration::from_secs(2);
/// Recent messages kept at most per partition...
const RECENT_MESSAGES: usize = 1024;
/// ...and at most this many bytes of their texts.
const RECENT_TEXT_BYTES: usize = 1 << 20;

struct Recent {
    at: Instant,
    message: MessageRecord,
    members: Vec<String>,
}

/// Leadership and recent commits of one partition on this node.
pub struct PartitionDelivery {
    sink: CommitSink,
    leading: AtomicBool,
    recent: Mutex<RecentList>,
}

#[derive(Default)]
struct RecentList {
    list: VecDeque<Recent>,
    text_bytes: usize,
}

impl RecentList {
    fn push(&mut self, r: Recent) {
        self.text_bytes += r.message.text.len();
        self.list.push_back(r);
        while self.list.len() > RECENT_MESSAGES || self.text_bytes > RECENT_TEXT_BYTES {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(r) = self.list.pop_front() {
            self.text_bytes -= r.message.text.len();
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self.list.front().is_some_and(|r| now.duration_since(r.at) > RECENT) {
            self.pop();
        }
    }
}

impl PartitionDelivery {
    /// Delivery of one partition into `sink`; not leading until told.
    pub fn new(sink: CommitSink) -> Self {
        PartitionDelivery {
            sink,
            leading: AtomicBool::new(false),
            recent: Mutex::new(RecentList::default()),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentList> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message this replica applied (after the apply batch is stored): delivered now if
    /// this replica leads, remembered for a while either way.
    pub fn applied(&self, message: MessageRecord, members: Vec<String>) {
        // Remembered before the leadership check: a replica becoming leader at this moment
        // either sees it in `became_leader`'s list or has `leading` set here.
        {
            let now = Instant::now();
            let mut recent = self.recent();
            recent.forget_before(now);
            recent.push(Recent {
                at: now,
                message: message.clone(),
                members: members.clone(),
            });
        }
        if self.leading.load(Ordering::SeqCst) {
            self.sink.message_committed(&message, &members);
        }
    }

    /// This replica now leads: it delivers from here on, and delivers the recent commits
    /// again. Returns how many it delivered again.
    pub fn became_leader(&self) -> usize {
        self.lead_and_deliver_again(RECENT)
    }

    /// This replica now leads, handed over by a live predecessor. The predecessor delivered
    /// what it applied while it led, but not its writes still in flight at the hand-over:
    /// those commit in this leader's term, and this replica may apply them a moment before it
    /// learns that it leads. So only the last `HANDED_OVER_RECENT` is delivered again (a few
    /// duplicates, which clients drop by `(channel_id, seq)`), not the whole `RECENT`.
    /// Without it, such a message would reach its recipients only at their next catch-up
    /// (docs/fanout.md). Returns how many it delivered again.
    pub fn took_over(&self) -> usize {
        self.lead_and_deliver_again(HANDED_OVER_RECENT)
    }

    /// Starts delivering, and delivers again what was applied in the last `window`.
    fn lead_and_deliver_again(&self, window: Duration) -> usize {
        self.leading.store(true, Ordering::SeqCst);
        let again: Vec<(MessageRecord, Vec<String>)> = {
            let now = Instant::now();
            let mut recent = self.recent();
            recent.forget_before(now);
            recent
                .list
                .iter()
                .filter(|r| now.duration_since(r.at) <= window)
                .map(|r| (r.message.clone(), r.members.clone()))
                .collect()
        };
        for (message, members) in &again {
            self.sink.message_committed(message, members);
        }
        again.len()
    }

    /// This replica no longer leads: the new leader delivers.
    pub fn stopped_leading(&self) {
        self.leading.store(false, Ordering::SeqCst);
    }

    /// True while this replica delivers.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delivery::CommitEvents;

    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>);

    impl CommitEvents for Seen {
        fn message_committed(&self, message: &MessageRecord, _members: &[String]) {
            self.0.lock().unwrap().push(message.seq);
        }
    }

    fn message(seq: u64, text_len: usize) -> MessageRecord {
        MessageRecord {
            channel_id: "c".into(),
            seq,
            sender_id: "a".into(),
            text: "x".repeat(text_len),
            ts: 0,
            client_msg_id: None,
        }
    }

    fn delivery() -> (PartitionDelivery, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let sink = CommitSink::default();
        sink.set(seen.clone());
        (PartitionDelivery::new(sink), seen)
    }

    #[test]
    fn only_the_leader_delivers_and_a_new_leader_delivers_the_recent_tail_again() {
        let (d, seen) = delivery();
        d.applied(message(1, 1), vec!["a".into()]);
        d.applied(message(2, 1), vec!["a".into()]);
        assert!(seen.0.lock().unwrap().is_empty(), "a follower delivers nothing");
        assert_eq!(d.became_leader(), 2);
        d.applied(message(3, 1), vec!["a".into()]);
        d.stopped_leading();
        d.applied(message(4, 1), vec!["a".into()]);
        assert_eq!(*seen.0.lock().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_replica_handed_the_group_delivers_again_only_the_moments_before_the_hand_over() {
        let (d, seen) = delivery();
        d.applied(message(1, 1), vec!["a".into()]);
        // Applied just before this replica learned it leads: the predecessor's write in
        // flight at the hand-over, which nobody delivered.
        assert_eq!(d.took_over(), 1);
        d.applied(message(2, 1), vec!["a".into()]);
        assert_eq!(*seen.0.lock().unwrap(), vec![1, 2]);
        // Older commits were delivered by the predecessor: not again.
        let (d, seen) = delivery();
        d.applied(message(1, 1), vec!["a".into()]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.lead_and_deliver_again(Duration::from_millis(1)), 0);
        assert!(seen.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_recent_tail_is_bounded_in_count_and_text_bytes() {
        let (d, seen) = delivery();
        for seq in 1..=(RECENT_MESSAGES as u64 + 10) {
            d.applied(message(seq, 1), Vec::new());
        }
        assert_eq!(d.became_leader(), RECENT_MESSAGES);
        assert_eq!(seen.0.lock().unwrap()[0], 11, "the oldest are forgotten first");
        let (d, _) = delivery();
        for seq in 1..=8 {
            d.applied(message(seq, RECENT_TEXT_BYTES / 4), Vec::new());
        }
        assert_eq!(d.became_leader(), 4);
    }
}
