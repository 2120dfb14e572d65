//! The `hardware` item: crossbar geometry, converters, buffers, the
//! energy block and its overrides (each bounded by the energy table), and
//! the device noise model ([`super::noise`]).

use super::*;

impl Cx {
    pub(super) fn hardware(&mut self, item: &ast::Item) -> Hardware {
        let owner = format!("hardware {}", item.name.name);
        self.locs.insert(
            owner.clone(),
            Loc {
                file: self.file,
                span: item.name.span.clone(),
            },
        );
        let b = self.body(
            owner,
            &item.body,
            &[
                "crossbar",
                "cell_bits",
                "weight_bits",
                "input_bits",
                "dac_bits",
                "adc_bits",
                "signs",
                "chips",
                "tiles",
                "cores_per_tile",
                "crossbars_per_core",
                "adcs_per_core",
                "tile_buffer",
                "core_buffer",
                "endurance",
                "noise",
            ],
            &["energy", "timing", "noise"],
            false,
            item.span.end.saturating_sub(1)..item.span.end,
        );
        let mut h = Hardware {
            name: item.name.name.clone(),
            ..Hardware::default()
        };
        if let Some(v) = b.attrs.get("crossbar") {
            match &v.kind {
                ValueKind::Dims { rows, sep, cols } => {
                    if sep.name != "x" {
                        self.err(
                            Diagnostic::error(
                                Code::E016,
                                format!(
                                    "dimensions are written `ROWS x COLS`, not with `{}`",
                                    sep.name
                                ),
                            )
                            .at(
                                self.file,
                                sep.span.clone(),
                                "expected `x`",
                            ),
                        );
                    } else {
                        let mut dim = |x: f64, what: &str| -> Option<u64> {
                            let ok = x.fract() == 0.0
                                && (2.0..=4096.0).contains(&x)
                                && (x as u64).is_power_of_two();
                            if ok {
                                Some(x as u64)
                            } else {
                                self.err(
                                    Diagnostic::error(Code::E017, format!("crossbar {what} must be a power of two from 2 to 4096, not {x}"))
                                        .at(self.file, v.span.clone(), "here")
                                        .help("e.g. `crossbar = 128 x 128;`"),
                                );
                                None
                            }
                        };
                        if let Some(r) = dim(*rows, "rows") {
                            h.rows = r;
                        }
                        if let Some(c) = dim(*cols, "columns") {
                            h.cols = c;
                        }
                    }
                }
                _ => self.err(
                    Diagnostic::error(
                        Code::E016,
                        format!("`crossbar` must be dimensions, found {}", v.describe()),
                    )
                    .at(self.file, v.span.clone(), "expected e.g. `128 x 128`"),
                ),
            }
        }
        let bits = |cx: &mut Cx, k: &str, dst: &mut u32| {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = cx.int(v, k, 1, 16)
            {
                *dst = x as u32;
            }
        };
        bits(self, "cell_bits", &mut h.cell_bits);
        bits(self, "weight_bits", &mut h.weight_bits);
        bits(self, "input_bits", &mut h.input_bits);
        bits(self, "dac_bits", &mut h.dac_bits);
        bits(self, "adc_bits", &mut h.adc_bits);
        if h.cell_bits > h.weight_bits {
            let span = b
                .attrs
                .get("cell_bits")
                .map(|v| v.span.clone())
                .unwrap_or(b.end.clone());
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!(
                        "`cell_bits` ({}) exceeds `weight_bits` ({})",
                        h.cell_bits, h.weight_bits
                    ),
                )
                .at(
                    self.file,
                    span,
                    "a cell cannot hold more bits than a weight has",
                ),
            );
        }
        if h.dac_bits > h.input_bits {
            let span = b
                .attrs
                .get("dac_bits")
                .map(|v| v.span.clone())
                .unwrap_or(b.end.clone());
            self.err(
                Diagnostic::error(
                    Code::E017,
                    format!(
                        "`dac_bits` ({}) exceeds `input_bits` ({})",
                        h.dac_bits, h.input_bits
                    ),
                )
                .at(
                    self.file,
                    span,
                    "a DAC cannot drive more bits than an input has",
                ),
            );
        }
        if let Some(v) = b.attrs.get("signs") {
            match self.name(v, "signs", &["offset", "differential"]) {
                Some("differential") => h.signs = Signs::Differential,
                Some(_) => h.signs = Signs::Offset,
                None => {}
            }
        }
        let count = |cx: &mut Cx, k: &str, max: u64, dst: &mut u64| {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = cx.int(v, k, 1, max)
            {
                *dst = x;
            }
        };
        count(self, "chips", 4096, &mut h.chips);
        count(self, "tiles", 1_000_000, &mut h.tiles);
        count(self, "cores_per_tile", 1024, &mut h.cores_per_tile);
        count(self, "crossbars_per_core", 1024, &mut h.crossbars_per_core);
        let mut adcs = 0;
        count(self, "adcs_per_core", 1 << 20, &mut adcs);
        if adcs > 0 {
            h.adcs_per_core = Some(adcs);
        }
        for (k, dst) in [
            ("tile_buffer", &mut h.tile_buffer),
            ("core_buffer", &mut h.core_buffer),
        ] {
            if let Some(v) = b.attrs.get(k)
                && let Some(x) = self.quantity(v, k, UnitKind::Size)
            {
                if x < 1.0 || x > (1u64 << 40) as f64 || x.fract() != 0.0 {
                    self.err(
                        Diagnostic::error(
                            Code::E017,
                            format!("`{k}` must be a whole number of bytes from 1 B to 1 TiB"),
                        )
                        .at(self.file, v.span.clone(), "out of range"),
                    );
                } else {
                    *dst = x as u64;
                }
            }
        }
        if let Some(v) = b.attrs.get("endurance")
            && let Some(x) = self.real(v, "endurance", 1.0, 1e18)
        {
            h.endurance = x;
        }
        h.noise = self.noise(&b);
        for (block, kind, unit) in [
            ("energy", Kind::Energy, UnitKind::Energy),
            ("timing", Kind::Time, UnitKind::Time),
        ] {
            let Some(stmts) = b.blocks.get(block) else {
                continue;
            };
            let names = energy::names(kind);
            let inner = self.body(
                format!("{block} block"),
                stmts,
                &names,
                &[],
                false,
                b.end.clone(),
            );
            for (k, v) in &inner.attrs {
                if let Some(x) = self.quantity(v, k, unit) {
                    h.overrides.insert(k.to_string(), x);
                }
            }
        }
        h
    }
}
