//! The subscription state machine of RFC 6121 Appendix A, as pure
//! functions: a state, a subscription stanza, and which way it travels,
//! give the new state and what to do with the stanza.

use crate::stanza::PresenceType;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Subscription {
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The contact follows the user (gets the user's presence).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    /// The user follows the contact.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    fn with(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// One side's view of a subscription relationship.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubState {
    pub subscription: Subscription,
    /// We asked to subscribe and wait for an answer (`ask='subscribe'`).
    pub pending_out: bool,
    /// The contact asked to subscribe and waits for our answer.
    pub pending_in: bool,
    /// The user pre-approved the contact's subscription (RFC 6121 §3.4):
    /// a later request from the contact is approved without asking. Only
    /// set while the contact does not follow the user and has not asked.
    pub approved: bool,
}

/// Which way a subscription stanza travels, seen from the user whose
/// state changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The user sent it (RFC 6121 Appendix A.2).
    Outbound,
    /// It is for the user (Appendix A.3).
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: SubState,
    /// Route the stanza on (outbound) or deliver it to the user (inbound).
    pub forward: bool,
    /// Inbound `subscribe` from a contact already approved or pre-approved:
    /// answer `subscribed` on the user's behalf instead of delivering.
    pub auto_approve: bool,
}

impl SubState {
    pub fn transition(self, direction: Direction, kind: PresenceType) -> Transition {
        let s = self.subscription;
        let (to, from) = (s.has_to(), s.has_from());
        let mut next = self;
        let mut forward = false;
        let mut auto_approve = false;
        use Direction::{Inbound, Outbound};
        match (direction, kind) {
            (Outbound, PresenceType::Subscribe) => {
                next.pending_out = !to;
                forward = true;
            }
            (Outbound, PresenceType::Unsubscribe) => {
                next.subscription = Subscription::with(false, from);
                next.pending_out = false;
                forward = true;
            }
            (Outbound, PresenceType::Subscribed) if self.pending_in => {
                next.subscription = Subscription::with(to, true);
                next.pending_in = false;
                forward = true;
            }
            // Without a pending request it is a pre-approval (§3.4.2),
            // kept and pushed but not routed: the contact asked nothing.
            (Outbound, PresenceType::Subscribed) if !from => next.approved = true,
            // The contact stops following the user (or is refused).
            (Outbound, PresenceType::Unsubscribed) | (Inbound, PresenceType::Unsubscribe)
                if self.pending_in || from =>
            {
                next.subscription = Subscription::with(to, false);
                next.pending_in = false;
                forward = true;
            }
            // Cancels a pre-approval (§3.4), which the contact never knew of.
            (Outbound, PresenceType::Unsubscribed) => next.approved = false,
            (Inbound, PresenceType::Subscribe) if from => auto_approve = true,
            // Pre-approved (§3.4.3): the approval is used up on this request.
            (Inbound, PresenceType::Subscribe) if self.approved => {
                next.subscription = Subscription::with(to, true);
                next.pending_in = false;
                next.approved = false;
                auto_approve = true;
            }
            (Inbound, PresenceType::Subscribe) if !self.pending_in => {
                next.pending_in = true;
                forward = true;
            }
            (Inbound, PresenceType::Subscribed) if self.pending_out => {
                next.subscription = Subscription::with(true, from);
                next.pending_out = false;
                forward = true;
            }
            (Inbound, PresenceType::Unsubscribed) if self.pending_out || to => {
                next.subscription = Subscription::with(false, from);
                next.pending_out = false;
                forward = true;
            }
            _ => {}
        }
        Transition {
            state: next,
            forward,
            auto_approve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use PresenceType::*;

    /// The states of RFC 6121 Appendix A by their names there, with
    /// "Approved" for a pre-approval (§3.4).
    fn st(name: &str) -> SubState {
        let (sub, rest) = name.split_once('+').map_or((name, ""), |(a, b)| (a, b));
        SubState {
            subscription: Subscription::parse(&sub.trim().to_lowercase()).unwrap(),
            pending_out: rest.contains("Out"),
            pending_in: rest.contains("In"),
            approved: rest.contains("Approved"),
        }
    }

    /// (state before, stanza, direction, state after, forwarded?)
    const TABLE: &[(&str, PresenceType, Direction, &str, bool)] = &[
        // A.2.1 outbound subscribe
        ("None", Subscribe, Outbound, "None + Pending Out", true),
        ("None + Pending Out", Subscribe, Outbound, "None + Pending Out", true),
        ("None + Pending In", Subscribe, Outbound, "None + Pending Out In", true),
        ("To", Subscribe, Outbound, "To", true),
        ("To + Pending In", Subscribe, Outbound, "To + Pending In", true),
        ("From", Subscribe, Outbound, "From + Pending Out", true),
        ("Both", Subscribe, Outbound, "Both", true),
        (
            "None + Approved",
            Subscribe,
            Outbound,
            "None + Pending Out Approved",
            true,
        ),
        ("To + Approved", Subscribe, Outbound, "To + Approved", true),
        // A.2.2 outbound unsubscribe
        ("None + Pending Out", Unsubscribe, Outbound, "None", true),
        (
            "None + Pending Out In",
            Unsubscribe,
            Outbound,
            "None + Pending In",
            true,
        ),
        ("To", Unsubscribe, Outbound, "None", true),
        ("To + Pending In", Unsubscribe, Outbound, "None + Pending In", true),
        ("From + Pending Out", Unsubscribe, Outbound, "From", true),
        ("Both", Unsubscribe, Outbound, "From", true),
        (
            "None + Pending Out Approved",
            Unsubscribe,
            Outbound,
            "None + Approved",
            true,
        ),
        ("To + Approved", Unsubscribe, Outbound, "None + Approved", true),
        // A.2.3 outbound subscribed; without a request, a pre-approval
        // (§3.4.2), stored but not routed
        ("None", Subscribed, Outbound, "None + Approved", false),
        (
            "None + Pending Out",
            Subscribed,
            Outbound,
            "None + Pending Out Approved",
            false,
        ),
        ("To", Subscribed, Outbound, "To + Approved", false),
        ("None + Approved", Subscribed, Outbound, "None + Approved", false),
        ("None + Pending In", Subscribed, Outbound, "From", true),
        (
            "None + Pending Out In",
            Subscribed,
            Outbound,
            "From + Pending Out",
            true,
        ),
        ("To + Pending In", Subscribed, Outbound, "Both", true),
        ("From", Subscribed, Outbound, "From", false),
        ("From + Pending Out", Subscribed, Outbound, "From + Pending Out", false),
        ("Both", Subscribed, Outbound, "Both", false),
        // A.2.4 outbound unsubscribed; it also cancels a pre-approval (§3.4)
        ("None", Unsubscribed, Outbound, "None", false),
        ("None + Approved", Unsubscribed, Outbound, "None", false),
        (
            "None + Pending Out Approved",
            Unsubscribed,
            Outbound,
            "None + Pending Out",
            false,
        ),
        ("To + Approved", Unsubscribed, Outbound, "To", false),
        ("None + Pending In", Unsubscribed, Outbound, "None", true),
        (
            "None + Pending Out In",
            Unsubscribed,
            Outbound,
            "None + Pending Out",
            true,
        ),
        ("To + Pending In", Unsubscribed, Outbound, "To", true),
        ("From", Unsubscribed, Outbound, "None", true),
        ("From + Pending Out", Unsubscribed, Outbound, "None + Pending Out", true),
        ("Both", Unsubscribed, Outbound, "To", true),
        // A.3.1 inbound subscribe
        ("None", Subscribe, Inbound, "None + Pending In", true),
        ("None + Pending Out", Subscribe, Inbound, "None + Pending Out In", true),
        ("None + Pending In", Subscribe, Inbound, "None + Pending In", false),
        ("To", Subscribe, Inbound, "To + Pending In", true),
        ("From", Subscribe, Inbound, "From", false),
        ("Both", Subscribe, Inbound, "Both", false),
        // ...pre-approved: approved at once, the approval used up (§3.4.3)
        ("None + Approved", Subscribe, Inbound, "From", false),
        (
            "None + Pending Out Approved",
            Subscribe,
            Inbound,
            "From + Pending Out",
            false,
        ),
        ("To + Approved", Subscribe, Inbound, "Both", false),
        // A.3.2 inbound unsubscribe
        ("None", Unsubscribe, Inbound, "None", false),
        ("None + Pending In", Unsubscribe, Inbound, "None", true),
        (
            "None + Pending Out In",
            Unsubscribe,
            Inbound,
            "None + Pending Out",
            true,
        ),
        ("To + Pending In", Unsubscribe, Inbound, "To", true),
        ("From", Unsubscribe, Inbound, "None", true),
        ("From + Pending Out", Unsubscribe, Inbound, "None + Pending Out", true),
        ("Both", Unsubscribe, Inbound, "To", true),
        ("None + Approved", Unsubscribe, Inbound, "None + Approved", false),
        // A.3.3 inbound subscribed
        ("None", Subscribed, Inbound, "None", false),
        ("None + Pending Out", Subscribed, Inbound, "To", true),
        ("None + Pending Out In", Subscribed, Inbound, "To + Pending In", true),
        ("From + Pending Out", Subscribed, Inbound, "Both", true),
        (
            "None + Pending Out Approved",
            Subscribed,
            Inbound,
            "To + Approved",
            true,
        ),
        ("To", Subscribed, Inbound, "To", false),
        ("Both", Subscribed, Inbound, "Both", false),
        // A.3.4 inbound unsubscribed
        ("None", Unsubscribed, Inbound, "None", false),
        ("None + Pending Out", Unsubscribed, Inbound, "None", true),
        (
            "None + Pending Out In",
            Unsubscribed,
            Inbound,
            "None + Pending In",
            true,
        ),
        ("To", Unsubscribed, Inbound, "None", true),
        ("To + Pending In", Unsubscribed, Inbound, "None + Pending In", true),
        ("From + Pending Out", Unsubscribed, Inbound, "From", true),
        ("Both", Unsubscribed, Inbound, "From", true),
        ("From", Unsubscribed, Inbound, "From", false),
        ("To + Approved", Unsubscribed, Inbound, "None + Approved", true),
    ];

    #[test]
    fn rfc6121_appendix_a() {
        for &(before, kind, dir, after, forward) in TABLE {
            let t = st(before).transition(dir, kind);
            assert_eq!(t.state, st(after), "{before} + {kind:?} {dir:?}");
            assert_eq!(t.forward, forward, "{before} + {kind:?} {dir:?}: forward");
        }
    }

    #[test]
    fn approved_contacts_are_answered_automatically() {
        for s in [
            "From",
            "From + Pending Out",
            "Both",
            "None + Approved",
            "None + Pending Out Approved",
            "To + Approved",
        ] {
            assert!(st(s).transition(Inbound, Subscribe).auto_approve, "{s}");
        }
        for s in ["None", "None + Pending Out", "To"] {
            assert!(!st(s).transition(Inbound, Subscribe).auto_approve, "{s}");
        }
    }
}
