//! Reading values: attributes of an item body, integers and reals in
//! range, quantities with units, names from a fixed set, strings and
//! call arguments. Each reader reports its own located diagnostic and
//! returns `None` on error, so checking goes on.

use super::*;

impl Cx {
    pub(super) fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    pub(super) fn body<'a>(
        &mut self,
        owner: String,
        stmts: &'a [Stmt],
        attrs: &[&str],
        blocks: &[&str],
        keeps: bool,
        end: Span,
    ) -> Body<'a> {
        let mut b = Body {
            attrs: BTreeMap::new(),
            blocks: BTreeMap::new(),
            keeps: Vec::new(),
            end,
            owner,
        };
        let mut spans: BTreeMap<&str, Span> = BTreeMap::new();
        let mut all: Vec<&str> = attrs.to_vec();
        all.extend_from_slice(blocks);
        for s in stmts {
            match s {
                Stmt::Attr { key, .. } | Stmt::Block { key, .. }
                    if !(if matches!(s, Stmt::Attr { .. }) {
                        attrs
                    } else {
                        blocks
                    })
                    .contains(&key.name.as_str()) =>
                {
                    let is_block = matches!(s, Stmt::Block { .. });
                    let mut d = Diagnostic::error(
                        Code::E014,
                        format!(
                            "unknown {} `{}` in {}",
                            if is_block { "block" } else { "attribute" },
                            key.name,
                            b.owner
                        ),
                    )
                    .at(self.file, key.span.clone(), "not known here");
                    if let Some(sug) = suggest(&key.name, &all) {
                        d = d.help(format!("did you mean `{sug}`?"));
                    } else if all.is_empty() {
                        d = d.note("nothing is known here");
                    } else {
                        d = d.note(format!("known here: {}", all.join(", ")));
                    }
                    self.err(d);
                }
                Stmt::Attr { key, value, .. } => {
                    if let Some(prev) = spans.get(key.name.as_str()) {
                        self.err(
                            Diagnostic::error(Code::E013, format!("`{}` is given twice", key.name))
                                .at(self.file, key.span.clone(), "given again here")
                                .also(self.file, prev.clone(), "first given here"),
                        );
                        continue;
                    }
                    spans.insert(&key.name, key.span.clone());
                    b.attrs.insert(&key.name, value);
                    self.locs.insert(
                        format!("{}.{}", b.owner, key.name),
                        Loc {
                            file: self.file,
                            span: value.span.clone(),
                        },
                    );
                }
                Stmt::Block { key, body, .. } => {
                    if let Some(prev) = spans.get(key.name.as_str()) {
                        self.err(
                            Diagnostic::error(
                                Code::E013,
                                format!("block `{}` is given twice", key.name),
                            )
                            .at(self.file, key.span.clone(), "given again here")
                            .also(
                                self.file,
                                prev.clone(),
                                "first given here",
                            ),
                        );
                        continue;
                    }
                    spans.insert(&key.name, key.span.clone());
                    b.blocks.insert(&key.name, body);
                }
                Stmt::Keep {
                    metric,
                    op,
                    bound,
                    span,
                } => {
                    if keeps {
                        b.keeps.push((metric, *op, bound, span.clone()));
                    } else {
                        self.err(
                            Diagnostic::error(
                                Code::E014,
                                format!("`keep` budgets belong in tasks, not in {}", b.owner),
                            )
                            .at(
                                self.file,
                                span.clone(),
                                "not allowed here",
                            ),
                        );
                    }
                }
                Stmt::Def { span, .. } => self.err(
                    Diagnostic::error(
                        Code::E021,
                        "node and parameter definitions belong in `graph` blocks",
                    )
                    .at(self.file, span.clone(), "not allowed here"),
                ),
                Stmt::Error { .. } => {}
            }
        }
        b
    }

    pub(super) fn missing(&mut self, b: &Body, attr: &str, example: &str) {
        self.err(
            Diagnostic::error(Code::E015, format!("{} has no `{attr}`", b.owner))
                .at(self.file, b.end.clone(), format!("`{attr}` is required"))
                .help(format!("add `{attr} = {example};`")),
        );
    }

    pub(super) fn int(&mut self, v: &Value, what: &str, min: u64, max: u64) -> Option<u64> {
        match &v.kind {
            ValueKind::Number { value, text } => {
                if !value.is_finite() || value.fract() != 0.0 {
                    let msg = if value.is_finite() {
                        format!("`{what}` must be a whole number, not `{text}`")
                    } else {
                        format!("`{what}` = `{text}` is too large")
                    };
                    let code = if value.is_finite() {
                        Code::E016
                    } else {
                        Code::E017
                    };
                    self.err(Diagnostic::error(code, msg).at(self.file, v.span.clone(), "here"));
                    return None;
                }
                if *value < min as f64 || *value > max as f64 {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{what}` must be between {min} and {max}, not {text}"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(*value as u64)
            }
            ValueKind::Quantity { unit, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain count and takes no unit"),
                    )
                    .at(self.file, unit.span.clone(), "remove this unit"),
                );
                None
            }
            ValueKind::Percent { .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain count, not a percentage"),
                    )
                    .at(self.file, v.span.clone(), "remove the `%`"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a whole number, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a number"),
                );
                None
            }
        }
    }

    pub(super) fn real(&mut self, v: &Value, what: &str, min: f64, max: f64) -> Option<f64> {
        match &v.kind {
            ValueKind::Number { value, text } => {
                if !value.is_finite() || *value < min || *value > max {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{what}` must be between {min} and {max}, not {text}"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                    return None;
                }
                Some(*value)
            }
            ValueKind::Quantity { unit, .. } | ValueKind::Dims { sep: unit, .. }
                if matches!(v.kind, ValueKind::Quantity { .. }) =>
            {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is a plain number and takes no unit"),
                    )
                    .at(self.file, unit.span.clone(), "remove this unit"),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a number, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a number"),
                );
                None
            }
        }
    }

    pub(super) fn quantity(&mut self, v: &Value, what: &str, kind: UnitKind) -> Option<f64> {
        match &v.kind {
            ValueKind::Quantity { number, unit, text } => {
                if let Some((_, f)) = kind.units().iter().find(|(u, _)| *u == unit.name) {
                    let x = number * f;
                    let (max, max_text) = kind.max();
                    if !x.is_finite() || x < 0.0 || x > max {
                        let noun = kind.name().split_once(' ').map_or("", |(_, n)| n);
                        let limit = if max_text.is_empty() {
                            String::new()
                        } else {
                            format!(" of at most {max_text}")
                        };
                        self.err(
                            Diagnostic::error(
                                Code::E017,
                                format!("`{what}` must be a non-negative finite {noun}{limit}, not {text}"),
                            )
                            .at(
                                self.file,
                                v.span.clone(),
                                "out of range",
                            ),
                        );
                        return None;
                    }
                    return Some(x);
                }
                let units: Vec<&str> = kind.units().iter().map(|(u, _)| *u).collect();
                let mut d = if let Some(other) = unit_kind_of(&unit.name) {
                    Diagnostic::error(
                        Code::E018,
                        format!(
                            "`{what}` is {} but `{}` measures {}",
                            kind.name(),
                            unit.name,
                            other.name()
                        ),
                    )
                    .at(self.file, unit.span.clone(), "wrong kind of unit")
                } else {
                    Diagnostic::error(Code::E018, format!("unknown unit `{}`", unit.name)).at(
                        self.file,
                        unit.span.clone(),
                        "not a unit mgen knows",
                    )
                };
                match suggest(&unit.name, &units) {
                    Some(s) if unit_kind_of(&unit.name).is_none() => {
                        d = d.help(format!("did you mean `{s}`?"))
                    }
                    _ => d = d.help(format!("`{what}` takes one of: {}", units.join(", "))),
                }
                self.err(d);
                None
            }
            ValueKind::Number { text, .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E018,
                        format!("`{what}` is {} and needs a unit", kind.name()),
                    )
                    .at(self.file, v.span.clone(), "no unit")
                    .help(format!(
                        "write e.g. `{what} = {text} {}`",
                        kind.example().split(' ').nth(1).unwrap_or("")
                    )),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be {}, found {}", kind.name(), v.describe()),
                    )
                    .at(
                        self.file,
                        v.span.clone(),
                        format!("expected e.g. `{}`", kind.example()),
                    ),
                );
                None
            }
        }
    }

    pub(super) fn name<'v>(
        &mut self,
        v: &'v Value,
        what: &str,
        choices: &[&str],
    ) -> Option<&'v str> {
        match &v.kind {
            ValueKind::Name { name } if choices.is_empty() || choices.contains(&name.as_str()) => {
                Some(name)
            }
            ValueKind::Name { name } => {
                let mut d =
                    Diagnostic::error(Code::E017, format!("`{name}` is not a valid `{what}`")).at(
                        self.file,
                        v.span.clone(),
                        format!("expected one of {}", choices.join(", ")),
                    );
                if let Some(s) = suggest(name, choices) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.err(d);
                None
            }
            _ => {
                let exp = if choices.is_empty() {
                    "a name".to_string()
                } else {
                    format!("one of {}", choices.join(", "))
                };
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a name, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), format!("expected {exp}")),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Value, what: &str) -> Option<String> {
        match &v.kind {
            ValueKind::Str { text } if !text.is_empty() => Some(text.clone()),
            ValueKind::Str { .. } => {
                self.err(
                    Diagnostic::error(Code::E017, format!("`{what}` is an empty path")).at(
                        self.file,
                        v.span.clone(),
                        "empty",
                    ),
                );
                None
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`{what}` must be a path in quotes, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected a string"),
                );
                None
            }
        }
    }

    pub(super) fn args<'v>(
        &mut self,
        func: &Ident,
        args: &'v [Arg],
        params: &[&'static str],
    ) -> Option<BTreeMap<&'static str, &'v Value>> {
        let mut out: BTreeMap<&'static str, &'v Value> = BTreeMap::new();
        let mut ok = true;
        let mut positional = 0;
        for a in args {
            let key = match &a.name {
                Some(n) => match params.iter().find(|p| **p == n.name) {
                    Some(p) => *p,
                    None => {
                        let mut d = Diagnostic::error(
                            Code::E014,
                            format!("`{}` has no argument `{}`", func.name, n.name),
                        )
                        .at(self.file, n.span.clone(), "unknown argument");
                        d = match suggest(&n.name, params) {
                            Some(s) => d.help(format!("did you mean `{s}`?")),
                            None => d.note(format!("`{}` takes: {}", func.name, params.join(", "))),
                        };
                        self.err(d);
                        ok = false;
                        continue;
                    }
                },
                None => match params.get(positional) {
                    Some(p) => {
                        positional += 1;
                        *p
                    }
                    None => {
                        self.err(
                            Diagnostic::error(
                                Code::E016,
                                format!("too many arguments to `{}`", func.name),
                            )
                            .at(self.file, a.span.clone(), "extra argument")
                            .note(format!(
                                "`{}` takes: {}",
                                func.name,
                                params.join(", ")
                            )),
                        );
                        ok = false;
                        continue;
                    }
                },
            };
            if out.insert(key, &a.value).is_some() {
                self.err(
                    Diagnostic::error(
                        Code::E013,
                        format!("argument `{key}` of `{}` is given twice", func.name),
                    )
                    .at(self.file, a.span.clone(), "given again"),
                );
                ok = false;
            }
        }
        ok.then_some(out)
    }
}
