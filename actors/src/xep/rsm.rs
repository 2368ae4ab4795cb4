//! XEP-0059: Result Set Management. A request names a page of a result
//! set (how many items, and where: from the start, after or before an
//! item's id, the last page, or by position); the reply says which items
//! the page holds, where the first one stands, and how many there are.
//! Ids are opaque to the requester: the service that answered chooses them.

use crate::error::{StanzaCondition, StanzaError};
use crate::xml::Element;

pub const NS: &str = "http://jabber.org/protocol/rsm";

/// Where a page starts (or ends, paging backwards).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cursor {
    /// The first page.
    #[default]
    First,
    /// The items after this one (§2.2: the next page).
    After(String),
    /// The items before this one (§2.3: the previous page), nearest last.
    Before(String),
    /// The last page (§2.5: an empty `<before/>`).
    Last,
    /// From this position (§2.4: out of order).
    Index(usize),
}

impl Cursor {
    /// True when the page is counted back from its end.
    pub fn backwards(&self) -> bool {
        matches!(self, Cursor::Before(_) | Cursor::Last)
    }
}

/// A requested page: at most `max` items (`None`: as many as the service
/// gives) from `cursor`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub max: Option<usize>,
    pub cursor: Cursor,
}

fn bad(text: &'static str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, text)
}

impl Request {
    /// Reads a `<set/>` (the caller found it in [`NS`]). `<first/>`,
    /// `<last/>` and `<count/>` belong to replies and are ignored.
    pub fn parse(set: &Element) -> Result<Request, StanzaError> {
        let number = |el: &Element, what: &'static str| el.text().trim().parse::<usize>().map_err(|_| bad(what));
        let (mut max, mut after, mut before, mut index) = (None, None, None, None);
        for child in set.children().filter(|c| c.ns() == NS) {
            match child.name() {
                "max" => max = Some(number(child, "<max/> is not a number")?),
                "index" => index = Some(number(child, "<index/> is not a number")?),
                "after" => {
                    let id = child.text().trim().to_owned();
                    if id.is_empty() {
                        return Err(bad("<after/> needs an id"));
                    }
                    after = Some(id);
                }
                // Empty: the last page.
                "before" => before = Some(child.text().trim().to_owned()),
                _ => {}
            }
        }
        let cursor = match (after, before, index) {
            (None, None, None) => Cursor::First,
            (Some(id), None, None) => Cursor::After(id),
            (None, Some(id), None) if id.is_empty() => Cursor::Last,
            (None, Some(id), None) => Cursor::Before(id),
            (None, None, Some(i)) => Cursor::Index(i),
            _ => return Err(bad("<after/>, <before/> and <index/> exclude each other")),
        };
        Ok(Request { max, cursor })
    }
}

/// The `<set/>` of a reply: the page's first item (its id and position in
/// the whole set) and last item, and the size of the set. An empty page
/// has neither (§2.7), only the count.
pub fn reply(first: Option<(&str, usize)>, last: Option<&str>, count: Option<usize>) -> Element {
    let mut set = Element::new("set", NS);
    if let Some((id, index)) = first {
        set.push_child(
            Element::new("first", NS)
                .with_attr("index", index.to_string())
                .with_text(id),
        );
    }
    if let Some(id) = last {
        set.push_child(Element::new("last", NS).with_text(id));
    }
    if let Some(count) = count {
        set.push_child(Element::new("count", NS).with_text(count.to_string()));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn set(xml: &str) -> Result<Request, StanzaError> {
        let el = client_element(xml);
        Request::parse(&el)
    }

    #[test]
    fn requests_name_a_page() {
        let rsm = |inner: &str| set(&format!("<set xmlns='{NS}'>{inner}</set>"));
        assert_eq!(rsm("").unwrap(), Request::default());
        assert_eq!(
            rsm("<max>10</max>").unwrap(),
            Request {
                max: Some(10),
                cursor: Cursor::First
            }
        );
        assert_eq!(
            rsm("<max>10</max><after>a1</after>").unwrap().cursor,
            Cursor::After("a1".into())
        );
        assert_eq!(rsm("<before>b2</before>").unwrap().cursor, Cursor::Before("b2".into()));
        assert_eq!(rsm("<max>5</max><before/>").unwrap().cursor, Cursor::Last);
        assert_eq!(rsm("<index>7</index>").unwrap().cursor, Cursor::Index(7));
        assert_eq!(rsm("<max>0</max>").unwrap().max, Some(0));
        assert!(Cursor::Last.backwards() && Cursor::Before("x".into()).backwards());
        assert!(!Cursor::After("x".into()).backwards() && !Cursor::First.backwards());
        for bad in [
            "<max>ten</max>",
            "<max>-1</max>",
            "<after/>",
            "<after>a</after><before>b</before>",
            "<before/><index>1</index>",
            "<index>x</index>",
        ] {
            let err = rsm(bad).unwrap_err();
            assert_eq!(err.condition, StanzaCondition::BadRequest, "{bad}");
        }
    }

    #[test]
    fn replies_list_first_last_and_count() {
        assert_eq!(
            reply(Some(("a", 3)), Some("c"), Some(10)).to_string(),
            "<set xmlns='http://jabber.org/protocol/rsm'><first index='3'>a</first><last>c</last>\
             <count>10</count></set>"
        );
        assert_eq!(
            reply(None, None, Some(0)).to_string(),
            "<set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set>"
        );
    }
}
