//! `#[stage_kind(...)]`: a stage kind declared once, on its settings type.
//!
//! The settings struct is the single source of a stage kind's keys, their
//! types, defaults and docs, and of its registration:
//!
//! ```text
//! /// Broadcast/multicast rate limit per link (token bucket).
//! #[lanparty_core::stage_kind(filter(ingress), name = "storm",
//!     example = "ingress: [ { type: storm, rate: 200 } ]", build = build)]
//! #[derive(Debug, Clone)]
//! pub struct StormSettings {
//!     /// Broadcast/multicast frames per second per link.
//!     #[key(default = 200)]
//!     pub rate: u32,
//! }
//! ```
//!
//! becomes the struct with `Deserialize` (unknown keys refused), one serde
//! default function per `default = EXPR`, a `KEYS` table of
//! `lanparty_core::registry::KeyDoc` (the key's name, its type from
//! `KeyType` or `ty = "..."`, its default as written or `shown = "..."`,
//! the field's doc comment) and the `inventory` registration whose
//! summary is the first paragraph of the struct's doc comment.
//!
//! A field's default: `#[key(default = "TEXT")]` (config text, read by the
//! key's own parser; a generated test checks that it parses),
//! `#[key(default = 200)]` (an integer or bool literal), `#[key(default =
//! EXPR, shown = "...")]` (any Rust expression; a `shown` written as text
//! must read, through the key's parser, as EXPR's value — a generated test
//! checks it — or name a `&str` constant), `#[key(default, shown = "...")]`
//! (`Default::default()`), an `Option` without `key` (shown `none`), or
//! none: the key is required. Other `#[serde(...)]` attributes pass
//! through. This crate only rewrites tokens; it names paths in
//! `lanparty_core`, which re-exports it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens, TokenTree};
use quote::{format_ident, quote};
use syn::{Attribute, Data, DeriveInput, Error, Expr, Fields, Lit, Meta, Type, parse_macro_input};

/// Declares a stage kind on its settings struct; see the crate docs.
#[proc_macro_attribute]
pub fn stage_kind(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut input = parse_macro_input!(item as DeriveInput);
    match expand(args.into(), &mut input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// One `name` or `name = tokens` item of an argument list.
struct Arg {
    name: syn::Ident,
    /// What follows the name: `= value` (without the `=`) or `(group)`.
    value: Option<Tokens>,
    group: Option<Tokens>,
}

/// Splits `a, b = x, c(y)` at its top-level commas.
fn parse_args(tokens: Tokens) -> syn::Result<Vec<Arg>> {
    let mut args = Vec::new();
    let mut items: Vec<Vec<TokenTree>> = vec![Vec::new()];
    for tt in tokens {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => items.push(Vec::new()),
            _ => items.last_mut().map_or((), |item| item.push(tt)),
        }
    }
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        let mut it = item.into_iter();
        let name = match it.next() {
            Some(TokenTree::Ident(name)) => name,
            Some(other) => return Err(Error::new(other.span(), "expected a name")),
            None => continue,
        };
        let rest: Vec<TokenTree> = it.collect();
        let (value, group) = match rest.first() {
            None => (None, None),
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {
                (Some(rest[1..].iter().cloned().collect()), None)
            }
            Some(TokenTree::Group(g)) if rest.len() == 1 => (None, Some(g.stream())),
            Some(other) => {
                return Err(Error::new(other.span(), "expected `= value` or `(...)`"));
            }
        };
        args.push(Arg { name, value, group });
    }
    Ok(args)
}

/// The text of a single string literal.
fn string(tokens: &Tokens, what: &str) -> syn::Result<String> {
    match syn::parse2::<Lit>(tokens.clone()) {
        Ok(Lit::Str(s)) => Ok(s.value()),
        _ => Err(Error::new_spanned(
            tokens,
            format!("`{what}` takes a string literal"),
        )),
    }
}

/// A string literal's tokens.
fn text(s: &str) -> Tokens {
    quote!(#s)
}

/// The doc comment's paragraphs, each joined into one line.
fn doc_paragraphs(attrs: &[Attribute]) -> Vec<String> {
    let mut paragraphs = vec![String::new()];
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        let Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) = &nv.value
        else {
            continue;
        };
        let line = s.value();
        let line = line.trim();
        if line.is_empty() {
            if paragraphs.last().is_some_and(|p| !p.is_empty()) {
                paragraphs.push(String::new());
            }
        } else if let Some(p) = paragraphs.last_mut() {
            if !p.is_empty() {
                p.push(' ');
            }
            p.push_str(line);
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs
}

/// The last path segment's name of a type (`Option`, `bool`, …).
fn type_name(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// Whether any `#[serde(...)]` attribute gives a default already.
fn serde_default(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .any(|a| match &a.meta {
            Meta::List(list) => list
                .tokens
                .clone()
                .into_iter()
                .any(|t| matches!(t, TokenTree::Ident(i) if i == "default")),
            _ => false,
        })
}

fn expand(args: Tokens, input: &mut DeriveInput) -> syn::Result<Tokens> {
    let ident = input.ident.clone();
    // Some(Some(side)): a filter; Some(None): a router; `port`: a port.
    let mut build_kind: Option<Option<Tokens>> = None;
    let mut port = false;
    let (mut name, mut example, mut build) = (None, None, None);
    for arg in parse_args(args)? {
        match arg.name.to_string().as_str() {
            "filter" => {
                let sides = arg.group.ok_or_else(|| {
                    Error::new(
                        arg.name.span(),
                        "write filter(ingress), filter(egress) or filter(both)",
                    )
                })?;
                let side = match sides.to_string().as_str() {
                    "ingress" => quote!(Ingress),
                    "egress" => quote!(Egress),
                    "both" => quote!(Both),
                    _ => return Err(Error::new_spanned(sides, "ingress, egress or both")),
                };
                build_kind = Some(Some(side));
            }
            "router" => build_kind = Some(None),
            "port" => port = true,
            "name" => name = Some(string(&arg.value.unwrap_or_default(), "name")?),
            "example" => example = Some(string(&arg.value.unwrap_or_default(), "example")?),
            "build" => build = arg.value,
            other => {
                return Err(Error::new(
                    arg.name.span(),
                    format!(
                        "unknown `stage_kind` argument `{other}`: filter(SIDES) | router | port, name, example, build"
                    ),
                ));
            }
        }
    }
    let missing =
        |what: &str| Error::new(Span::call_site(), format!("`stage_kind` needs `{what}`"));
    let name = name.ok_or_else(|| missing("name = \"...\""))?;
    let example = example.ok_or_else(|| missing("example = \"...\""))?;
    let build = build.ok_or_else(|| missing("build = FUNCTION"))?;
    let build_kind = match (build_kind, port) {
        (Some(Some(side)), false) => {
            quote!(Filter { sides: lanparty_core::stage::FilterSides::#side, build: #build })
        }
        (Some(None), false) => quote!(Router { build: #build }),
        (None, true) => quote!(Port { build: #build }),
        _ => return Err(missing("one of filter(SIDES), router or port")),
    };
    let summary = doc_paragraphs(&input.attrs)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::new(
                ident.span(),
                "the settings struct's doc comment is the stage's summary: write one",
            )
        })?;

    let Data::Struct(data) = &mut input.data else {
        return Err(Error::new(ident.span(), "`stage_kind` goes on a struct"));
    };
    let fields = match &mut data.fields {
        Fields::Named(named) => named.named.iter_mut().collect::<Vec<_>>(),
        Fields::Unit => Vec::new(),
        Fields::Unnamed(_) => {
            return Err(Error::new(
                ident.span(),
                "settings need named fields (the keys)",
            ));
        }
    };
    let mut keys = Vec::new();
    let mut defaults = Vec::new();
    let mut default_tests = Vec::new();
    for field in fields {
        let Some(key) = field.ident.clone() else {
            continue;
        };
        let key_name = key.to_string();
        let doc = doc_paragraphs(&field.attrs).join(" ");
        if doc.is_empty() {
            return Err(Error::new(
                key.span(),
                "document the key: its doc comment is what `lanparty stages` shows",
            ));
        }
        let mut default: Option<Option<Tokens>> = None;
        let (mut shown, mut ty_text) = (None, None);
        let mut kept = Vec::new();
        for attr in field.attrs.drain(..) {
            if !attr.path().is_ident("key") {
                kept.push(attr);
                continue;
            }
            let Meta::List(list) = &attr.meta else {
                return Err(Error::new_spanned(
                    attr,
                    "write #[key(default = ..., shown = \"...\", ty = \"...\")]",
                ));
            };
            for arg in parse_args(list.tokens.clone())? {
                match arg.name.to_string().as_str() {
                    "default" => default = Some(arg.value),
                    "shown" => shown = arg.value,
                    "ty" => ty_text = Some(string(&arg.value.unwrap_or_default(), "ty")?),
                    other => {
                        return Err(Error::new(
                            arg.name.span(),
                            format!("unknown `key` argument `{other}`: default, shown, ty"),
                        ));
                    }
                }
            }
        }
        field.attrs = kept;
        let ty = field.ty.clone();
        let is_option = type_name(&ty).as_deref() == Some("Option");
        let shown: Tokens = match (&default, shown) {
            (_, Some(shown)) => shown,
            (Some(Some(value)), None) => match syn::parse2::<Lit>(value.clone()) {
                Ok(Lit::Str(s)) => text(&s.value()),
                Ok(Lit::Int(i)) => text(i.base10_digits()),
                Ok(Lit::Float(f)) => text(f.base10_digits()),
                Ok(Lit::Bool(b)) => text(&b.value.to_string()),
                _ => {
                    return Err(Error::new_spanned(
                        value,
                        "say how this default reads: add `shown = \"...\"`",
                    ));
                }
            },
            (Some(None), None) if is_option => text("none"),
            (Some(None), None) if type_name(&ty).as_deref() == Some("bool") => text("false"),
            (Some(None), None) => {
                return Err(Error::new(
                    key.span(),
                    "say how `Default::default()` reads: add `shown = \"...\"`",
                ));
            }
            (None, None) if is_option => text("none"),
            (None, None) if serde_default(&field.attrs) => {
                return Err(Error::new(
                    key.span(),
                    "a serde default needs #[key(shown = \"...\")]",
                ));
            }
            (None, None) => text("required"),
        };
        match default {
            Some(Some(value)) => {
                let function = format_ident!("__lanparty_default_{}", key);
                let path = format!("{ident}::{function}");
                let value = match syn::parse2::<Lit>(value.clone()) {
                    Ok(Lit::Str(text)) => {
                        let test = format_ident!("default_of_{}_parses", key);
                        default_tests.push(quote! {
                            #[test]
                            fn #test() {
                                let _: #ty = #ident::#function();
                            }
                        });
                        quote!(lanparty_core::config::default_from_text(#name, #key_name, #text))
                    }
                    Ok(_) => value,
                    // An expression shown as config text: a generated test
                    // reads the text with the key's parser and checks it is
                    // the expression's value, so the two cannot drift.
                    Err(_) => {
                        if let Ok(Lit::Str(text)) = syn::parse2::<Lit>(shown.clone()) {
                            let test = format_ident!("default_of_{}_reads_as_shown", key);
                            default_tests.push(quote! {
                                #[test]
                                fn #test() {
                                    let shown: #ty = lanparty_core::config::default_from_text(#name, #key_name, #text);
                                    assert_eq!(shown, #ident::#function());
                                }
                            });
                        }
                        value
                    }
                };
                defaults.push(quote! {
                    #[doc(hidden)]
                    pub fn #function() -> #ty { #value }
                });
                field
                    .attrs
                    .push(syn::parse_quote!(#[serde(default = #path)]));
            }
            Some(None) => field.attrs.push(syn::parse_quote!(#[serde(default)])),
            None if is_option && !serde_default(&field.attrs) => {
                field.attrs.push(syn::parse_quote!(#[serde(default)]));
            }
            None => {}
        }
        let ty_text = match ty_text {
            Some(text) => quote!(#text),
            None => quote!(<#ty as lanparty_core::registry::KeyType>::NAME),
        };
        keys.push(quote! {
            lanparty_core::registry::KeyDoc { name: #key_name, ty: #ty_text, default: #shown, doc: #doc }
        });
    }

    let tests_module = format_ident!("{}_defaults", ident);
    let tests = (!default_tests.is_empty()).then(|| {
        quote! {
            #[cfg(test)]
            #[allow(non_snake_case)]
            mod #tests_module {
                use super::*;
                #(#default_tests)*
            }
        }
    });
    Ok(quote! {
        #[derive(lanparty_core::serde::Deserialize)]
        #[serde(crate = "lanparty_core::serde", deny_unknown_fields)]
        #input

        impl #ident {
            /// The stage kind's keys, as `lanparty stages` documents them.
            pub const KEYS: &'static [lanparty_core::registry::KeyDoc] = &[#(#keys),*];
            #(#defaults)*
        }

        #tests

        lanparty_core::inventory::submit! {
            lanparty_core::registry::StageRegistration {
                name: #name,
                summary: #summary,
                keys: #ident::KEYS,
                example: #example,
                build: lanparty_core::registry::StageBuild::#build_kind,
            }
        }
    })
}
