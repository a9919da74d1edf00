//! A minimal JSON reader for the CLIs' `--format json` output (the crate
//! has no serde). Numbers stay text, so u64 values are exact.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut p = JsonParser {
            b: text.trim().as_bytes(),
            i: 0,
        };
        let v = p.value();
        assert_eq!(p.i, p.b.len(), "trailing bytes in JSON {text:?}");
        v
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }

    pub fn at(&self, key: &str) -> &Json {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            v => panic!("not a string: {v:?}"),
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("not a u64: {n}")),
            v => panic!("not a number: {v:?}"),
        }
    }

    pub fn i64(&self) -> i64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("not an i64: {n}")),
            v => panic!("not a number: {v:?}"),
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            v => panic!("not an array: {v:?}"),
        }
    }

    pub fn strs(&self) -> Vec<String> {
        match self {
            Json::Arr(v) => v.iter().map(|x| x.str().to_string()).collect(),
            v => panic!("not an array: {v:?}"),
        }
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.b[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                while !self.eat(b'}') {
                    let Json::Str(k) = self.value() else {
                        panic!("object key")
                    };
                    assert!(self.eat(b':'));
                    m.insert(k, self.value());
                    self.eat(b',');
                }
                Json::Obj(m)
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                while !self.eat(b']') {
                    v.push(self.value());
                    self.eat(b',');
                }
                Json::Arr(v)
            }
            b'"' => {
                self.i += 1;
                let mut s = Vec::new();
                while self.b[self.i] != b'"' {
                    if self.b[self.i] == b'\\' {
                        self.i += 1;
                        match self.b[self.i] {
                            b'n' => s.push(b'\n'),
                            b't' => s.push(b'\t'),
                            b'u' => {
                                let hex = &self.b[self.i + 1..self.i + 5];
                                let code = std::str::from_utf8(hex)
                                    .ok()
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                                    .and_then(char::from_u32)
                                    .unwrap_or_else(|| panic!("bad \\u escape {hex:?}"));
                                s.extend_from_slice(code.to_string().as_bytes());
                                self.i += 4;
                            }
                            c => s.push(c),
                        }
                    } else {
                        s.push(self.b[self.i]);
                    }
                    self.i += 1;
                }
                self.i += 1;
                Json::Str(String::from_utf8_lossy(&s).into_owned())
            }
            b't' => {
                self.i += 4;
                Json::Bool(true)
            }
            b'f' => {
                self.i += 5;
                Json::Bool(false)
            }
            b'n' => {
                self.i += 4;
                Json::Null
            }
            _ => {
                let start = self.i;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                Json::Num(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
            }
        }
    }
}
