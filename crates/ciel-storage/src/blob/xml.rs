//! Request bodies in XML (service properties, ACLs, key requests) read into a small tree, so
//! that each operation checks the elements it expects by name.

use super::error::{BlobError, BlobResult};
use quick_xml::events::Event;

/// One element: its name, its text (trimmed) and its children in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// The text of a child element, if present.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

pub fn invalid() -> BlobError {
    BlobError::bad(
        "InvalidXmlDocument",
        "XML specified is not syntactically valid.",
    )
}

/// Parses a document into its root element. Nesting is bounded: these documents are shallow.
pub fn parse(xml: &[u8]) -> BlobResult<Node> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| invalid())? {
            Event::Start(e) => {
                if root.is_some() || stack.len() >= 8 {
                    return Err(invalid());
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                let n = Node {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    ..Node::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None if root.is_none() => root = Some(n),
                    None => return Err(invalid()),
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|_| invalid())?;
                stack.last_mut().ok_or_else(invalid)?.text.push_str(&text);
            }
            Event::CData(t) => {
                let text = String::from_utf8(t.into_inner().into_owned()).map_err(|_| invalid())?;
                stack.last_mut().ok_or_else(invalid)?.text.push_str(&text);
            }
            Event::End(_) => {
                let n = stack.pop().ok_or_else(invalid)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(invalid());
    }
    root.ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree() {
        let n = parse(b"<?xml version=\"1.0\"?><A><B>x &amp; y</B><C/><B>2</B></A>").unwrap();
        assert_eq!(n.name, "A");
        assert_eq!(n.text_of("B"), Some("x & y"));
        assert_eq!(n.all("B").count(), 2);
        assert!(n.child("C").is_some());
        assert!(parse(b"<A><B></A>").is_err());
        assert!(parse(b"<A/><B/>").is_err());
        assert!(parse(b"").is_err());
    }
}
