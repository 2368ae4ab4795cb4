//! XEP-0004: Data Forms, as far as the server needs them: reading a
//! submitted form into its fields' values, and writing a blank form for a
//! client to fill in. A form's `FORM_TYPE` (XEP-0068) names what it is for;
//! a form of another type is refused rather than half understood.

use crate::error::{StanzaCondition, StanzaError};
use crate::xml::Element;

pub const NS: &str = "jabber:x:data";

fn bad(text: &'static str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, text)
}

/// A submitted form: each field's values, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Submitted {
    fields: Vec<(String, Vec<String>)>,
}

impl Submitted {
    /// Reads `<x xmlns='jabber:x:data' type='submit'>`. A field without
    /// `var` (a fixed one) carries nothing; a field given twice is refused.
    pub fn parse(x: &Element) -> Result<Submitted, StanzaError> {
        if !x.is("x", NS) {
            return Err(bad("not a data form"));
        }
        // §3.3 requires the type; a form without one is taken as submitted.
        if !matches!(x.attr("type"), None | Some("submit")) {
            return Err(bad("the form is not submitted"));
        }
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for field in x.children().filter(|c| c.is("field", NS)) {
            let Some(var) = field.attr("var") else { continue };
            if fields.iter().any(|(v, _)| v == var) {
                return Err(bad("a field is given twice"));
            }
            let values = field
                .children()
                .filter(|c| c.is("value", NS))
                .map(Element::text)
                .collect();
            fields.push((var.to_owned(), values));
        }
        Ok(Submitted { fields })
    }

    /// The form's `FORM_TYPE`, if it has one.
    pub fn form_type(&self) -> Option<&str> {
        self.get("FORM_TYPE").and_then(|v| v.first()).map(String::as_str)
    }

    /// Refuses a form whose `FORM_TYPE` is not `expected` (one without is
    /// taken for what the request it came in is about).
    pub fn check_type(&self, expected: &str) -> Result<(), StanzaError> {
        match self.form_type() {
            Some(t) if t != expected => Err(bad("the form's FORM_TYPE is not the expected one")),
            _ => Ok(()),
        }
    }

    /// Every field but `FORM_TYPE`, with its values.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.fields
            .iter()
            .filter(|(v, _)| v != "FORM_TYPE")
            .map(|(v, values)| (v.as_str(), values.as_slice()))
    }

    /// The values of field `var`, if it was given.
    pub fn get(&self, var: &str) -> Option<&[String]> {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .map(|(_, values)| values.as_slice())
    }
}

/// The one value of a single-valued field: `None` when it has none (or
/// only an empty one), an error when it has several.
pub fn single(values: &[String]) -> Result<Option<&str>, StanzaError> {
    match values {
        [] => Ok(None),
        [v] if v.is_empty() => Ok(None),
        [v] => Ok(Some(v.as_str())),
        _ => Err(bad("a single-valued field has several values")),
    }
}

/// A blank field for a form (§3.3): `kind` is its type (`text-single`,
/// `jid-single`, `list-multi`...).
pub fn field(var: &str, kind: &str) -> Element {
    Element::new("field", NS).with_attr("type", kind).with_attr("var", var)
}

/// A form to fill in (`type='form'`) of type `form_type`, with `fields`
/// after its hidden `FORM_TYPE`.
pub fn form(form_type: &str, fields: impl IntoIterator<Item = Element>) -> Element {
    let mut x = Element::new("x", NS).with_attr("type", "form");
    x.push_child(field("FORM_TYPE", "hidden").with_child(Element::new("value", NS).with_text(form_type)));
    for f in fields {
        x.push_child(f);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn x(xml: &str) -> Result<Submitted, StanzaError> {
        let el = client_element(xml);
        Submitted::parse(&el)
    }

    #[test]
    fn a_submitted_form_gives_its_values() {
        let form = x("<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>juliet@capulet.lit</value></field>\
             <field type='fixed'><value>ignored</value></field>\
             <field var='ids'><value>a</value><value>b</value></field>\
             <field var='start'/></x>")
        .unwrap();
        assert_eq!(form.form_type(), Some("urn:xmpp:mam:2"));
        form.check_type("urn:xmpp:mam:2").unwrap();
        assert!(form.check_type("urn:xmpp:other").is_err());
        let fields: Vec<(&str, Vec<&str>)> = form
            .fields()
            .map(|(v, values)| (v, values.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            fields,
            [
                ("with", vec!["juliet@capulet.lit"]),
                ("ids", vec!["a", "b"]),
                ("start", vec![])
            ]
        );
        assert_eq!(single(form.get("with").unwrap()).unwrap(), Some("juliet@capulet.lit"));
        assert_eq!(single(form.get("start").unwrap()).unwrap(), None);
        assert!(single(form.get("ids").unwrap()).is_err());
        assert_eq!(single(&[String::new()]).unwrap(), None);
    }

    #[test]
    fn other_forms_are_refused() {
        assert!(x("<x xmlns='jabber:x:data' type='form'/>").is_err());
        assert!(x("<x xmlns='jabber:x:data'><field var='a'/><field var='a'/></x>").is_err());
        assert!(x("<x xmlns='urn:other'/>").is_err());
        assert_eq!(x("<x xmlns='jabber:x:data'/>").unwrap().form_type(), None);
    }

    #[test]
    fn a_blank_form_has_its_type_first() {
        let f = form("urn:xmpp:mam:2", [field("with", "jid-single")]);
        assert_eq!(
            f.to_string(),
            "<x xmlns='jabber:x:data' type='form'><field type='hidden' var='FORM_TYPE'>\
             <value>urn:xmpp:mam:2</value></field><field type='jid-single' var='with'/></x>"
        );
    }
}
