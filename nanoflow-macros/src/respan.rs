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

/// Spans `tokens` over the range of the user's `over`: the first token takes the span of
/// `over`'s first token and the others that of its last, so an error about the expression
/// `tokens` is reported under exactly the user's tokens (on stable, spans cannot be joined).
pub(crate) fn respan_over(tokens: TokenStream, over: &impl quote::ToTokens) -> TokenStream {
    let mut user = over.to_token_stream().into_iter();
    let Some(first) = user.next().map(|t| t.span()) else {
        return tokens;
    };
    let last = user.last().map_or(first, |t| t.span());
    let mut trees = tokens.into_iter();
    let head = trees.next().map(|t| respan(t.into(), first));
    head.into_iter()
        .flatten()
        .chain(respan(trees.collect(), last))
        .collect()
}

/// A type as the user would write it, for messages: `Vec<Order>`, not `Vec < Order >`.
pub(crate) fn type_text(ty: &syn::Type) -> String {
    let spaced = quote::ToTokens::to_token_stream(ty).to_string();
    let mut out = String::with_capacity(spaced.len());
    let chars: Vec<char> = spaced.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = out.chars().last().unwrap_or(' ');
            let next = chars.get(i + 1).copied().unwrap_or(' ');
            let call = next == '(' && (prev.is_alphanumeric() || prev == '_');
            if call || "<(&[:".contains(prev) || "<>,;)]:".contains(next) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_text_reads_like_code() {
        let ty: syn::Type = syn::parse_quote!(std::collections::HashMap<String, Vec<(u32, Order)>>);
        assert_eq!(
            super::type_text(&ty),
            "std::collections::HashMap<String, Vec<(u32, Order)>>"
        );
        let ty: syn::Type = syn::parse_quote!([u8; 4]);
        assert_eq!(super::type_text(&ty), "[u8; 4]");
        let ty: syn::Type = syn::parse_quote!(Box<dyn Fn(u8) -> u8>);
        assert_eq!(super::type_text(&ty), "Box<dyn Fn(u8) -> u8>");
    }
}
