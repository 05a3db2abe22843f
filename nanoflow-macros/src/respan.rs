//! Gives every token of an expansion fragment one span, so the compiler reports an error in
//! that fragment at the user's token (a path built from `quote!` pieces would otherwise mix
//! call-site and user spans, and the error would fall back to the whole macro call).

use proc_macro2::{Group, Span, TokenStream, TokenTree};

pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut out = Group::new(g.delimiter(), respan(g.stream(), span));
                out.set_span(span);
                TokenTree::Group(out)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}
