//! Generates, for each workflow, a unit type implementing `Workflow` whose `execute` calls each
//! node directly: values move between in-process nodes without serialization, and parallel
//! branches are joined with `try_join!`.
//!
//! The macro never compares types. Each step is a call `ctx.step::<Node, Upstream>(..)` spanned
//! at the user's node token, whose `Accepts<Got, Takes>` bound makes the compiler report a
//! mismatched edge under the downstream node's name.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};

use super::ast::{
    Chain, FieldPat, Fields, If, Limit, Map, Match, NodeRef, Pattern, Signal, Sleep, Stage,
    StepRef, WorkflowDecl, WorkflowFile,
};
use crate::poison;
use crate::respan::respan;
use crate::trigger;

/// Expands every workflow, with `errors[i]` the errors found in workflow `i`.
pub(crate) fn expand(file: &WorkflowFile, errors: &[Vec<syn::Error>]) -> TokenStream {
    let krate = file
        .krate
        .as_ref()
        .map(|p| quote!(#p))
        .unwrap_or_else(|| quote!(::nanoflow));
    let private = quote!(#krate::__private);
    let mut out = poison::report(&file.errors);
    let mut declared = HashSet::new();
    for (wf, found) in file.workflows.iter().zip(errors) {
        let errors: Vec<syn::Error> = wf.errors.iter().chain(found).cloned().collect();
        if !declared.insert(wf.name.to_string()) {
            // A second workflow of the same name: the first one stands, this one is only reported.
            out.extend(poison::report(&errors));
        } else if wf.is_broken() {
            out.extend(stub(&private, wf, &errors));
        } else {
            out.extend(expand_one(&private, wf));
            out.extend(poison::report(&errors));
        }
    }
    out
}

struct Gen<'a> {
    private: &'a TokenStream,
    counter: usize,
    /// `step => compensation node` from `#[compensate(...)]`.
    compensations: &'a [crate::workflow::ast::Compensation],
    /// One type alias per step (`type __nanoflow_s0 = price;`), spanned at the user's token: a
    /// name that is not a node is reported once, there, and nowhere else. Also the type of
    /// each `match`'s value (`__nanoflow_e0`) and `map`'s collection (`__nanoflow_m0`).
    aliases: Vec<TokenStream>,
    /// Step descriptions in written order; their index is the step's index in the graph.
    steps: Vec<TokenStream>,
    /// The name and index of each node step (signals and sleeps are steps without a node).
    node_steps: Vec<(String, usize)>,
    edges: Vec<TokenStream>,
    /// `(from, to, label)` for the edges choosing a branch.
    labels: Vec<TokenStream>,
    /// One `MapDef` per `map(..)`, outermost first.
    maps: Vec<TokenStream>,
    matches: usize,
    /// The `signal`s so far: the checked type of the `n`th is `__nanoflow_g{n}`.
    signals: usize,
}

/// An endpoint of an edge while walking the graph.
#[derive(Clone)]
enum End {
    Input,
    Step(usize),
    Output,
}

/// Where a value comes from: an endpoint, and the label of the branch it takes to get here
/// (a `match` arm's variant, `true`/`false` after an `if`).
#[derive(Clone)]
struct Link {
    end: End,
    label: Option<String>,
}

impl Link {
    fn plain(end: End) -> Self {
        Link { end, label: None }
    }

    /// This link entering a branch labelled `label`.
    fn entering(&self, label: &str) -> Self {
        let label = match &self.label {
            Some(outer) => format!("{outer} / {label}"),
            None => label.to_owned(),
        };
        Link {
            end: self.end.clone(),
            label: Some(label),
        }
    }
}

/// A value flowing through the graph: the variable holding it and its type, when the
/// expansion can name it (it cannot name the payload of a `match` arm).
struct Value {
    var: syn::Ident,
    ty: Option<TokenStream>,
}

impl Value {
    /// The type of a stage's output, which is always named (only `match` payloads are not,
    /// and they are inputs).
    fn named(&self) -> &TokenStream {
        self.ty
            .as_ref()
            .expect("the output of a stage has a named type")
    }
}

/// What one stage or chain expands to: its statements, its output, and the links its output
/// leaves by.
type Expanded = (TokenStream, Value, Vec<Link>);

impl Gen<'_> {
    fn var(&mut self) -> syn::Ident {
        self.counter += 1;
        format_ident!("__nanoflow_v{}", self.counter)
    }

    fn endpoint(&self, end: &End) -> TokenStream {
        let private = self.private;
        match end {
            End::Input => quote!(#private::Endpoint::Input),
            End::Step(i) => quote!(#private::Endpoint::Step(#i)),
            End::Output => quote!(#private::Endpoint::Output),
        }
    }

    fn edge(&mut self, from: &Link, to: &End) {
        let (a, b) = (self.endpoint(&from.end), self.endpoint(to));
        if let Some(label) = &from.label {
            self.labels.push(quote!((#a, #b, #label)));
        }
        self.edges.push(quote!((#a, #b)));
    }

    /// Emits statements running `chain` on `input` (produced by `from`), returning the
    /// statements, the chain's output, and the chain's exits.
    fn chain(&mut self, chain: &Chain, input: Value, from: Vec<Link>) -> Expanded {
        let mut stmts = TokenStream::new();
        let mut current = input;
        let mut exits = from;
        for stage in &chain.stages {
            let (s, out, next) = self.stage(stage, current, exits);
            stmts.extend(s);
            current = out;
            exits = next;
        }
        (stmts, current, exits)
    }

    fn stage(&mut self, stage: &Stage, input: Value, from: Vec<Link>) -> Expanded {
        match stage {
            Stage::Node(node) => self.node(node, input, from, false),
            Stage::Group { branches, .. } if branches.len() == 1 => {
                self.chain(&branches[0], input, from)
            }
            Stage::Group { paren, branches } => self.group(*paren, branches, input, from),
            Stage::Match(m) => self.match_(m, input, from),
            Stage::If(i) => self.if_(i, input, from),
            Stage::Map(m) => self.map(m, input, from),
            Stage::Signal(signal) => self.signal(signal, input, from),
            Stage::Sleep(sleep) => self.sleep(sleep, input, from),
        }
    }

    /// `signal(name: T, timeout = ..)`: waits for the value, and passes on `(input, T)`, or
    /// `(input, Option<T>)` with a timeout.
    fn signal(&mut self, signal: &Signal, input: Value, from: Vec<Link>) -> Expanded {
        let private = self.private;
        let index = self.steps.len();
        let in_ty = input
            .ty
            .clone()
            .expect("validated: a signal's input type is named");
        // The value's type, checked to be data once, at the user's type: after that error
        // rustc treats the alias as failed, and its uses add none.
        let ty = format_ident!("__nanoflow_g{}", self.signals);
        self.signals += 1;
        let checked = checked_signal(private, &signal.ty);
        self.aliases.push(quote!(type #ty = #checked;));
        let name = signal.name.to_string();
        let timeout = signal.timeout.as_ref().map(|_| {
            let ns = signal.timeout_ns().unwrap_or(0);
            quote!(::core::time::Duration::from_nanos(#ns))
        });
        let timeout_arg = match &timeout {
            Some(t) => quote!(::core::option::Option::Some(#t)),
            None => quote!(::core::option::Option::None),
        };
        let step = quote!(#private::Step::signal::<#in_ty, #ty>(
            #name,
            #timeout_arg,
            || <#private::Probe<#ty>>::json_schema(#private::Side::Input),
        ));
        self.steps
            .push(crate::respan::respan_over(step, &signal.ty));
        for f in &from {
            self.edge(f, &End::Step(index));
        }
        let out = self.var();
        let in_var = &input.var;
        let (call, out_ty) = match &timeout {
            Some(_) => (
                quote!(__nanoflow_ctx.signal_in::<#in_ty, #ty>(#name, #timeout_arg, #in_var).await),
                quote!((#in_ty, ::core::option::Option<#ty>)),
            ),
            None => (
                quote!(__nanoflow_ctx.signal_required::<#in_ty, #ty>(#name, #in_var).await),
                quote!((#in_ty, #ty)),
            ),
        };
        let call = crate::respan::respan_over(call, &signal.ty);
        (
            quote!(let #out = #call?;),
            Value {
                var: out,
                ty: Some(out_ty),
            },
            vec![Link::plain(End::Step(index))],
        )
    }

    /// `sleep("10m")`: waits, then passes its input on.
    fn sleep(&mut self, sleep: &Sleep, input: Value, from: Vec<Link>) -> Expanded {
        let private = self.private;
        let index = self.steps.len();
        let in_ty = input
            .ty
            .clone()
            .expect("validated: a sleep's input type is named");
        let name = sleep.name.to_string();
        let ns = sleep.duration_ns();
        let duration = quote!(::core::time::Duration::from_nanos(#ns));
        self.steps
            .push(quote!(#private::Step::sleep::<#in_ty>(#name, #duration)));
        for f in &from {
            self.edge(f, &End::Step(index));
        }
        let out = self.var();
        let in_var = &input.var;
        let call = respan(
            quote!(__nanoflow_ctx.sleep_in::<#in_ty>(#name, #duration, #in_var).await),
            sleep.keyword.span(),
        );
        (
            quote!(let #out = #call?;),
            Value {
                var: out,
                ty: Some(in_ty),
            },
            vec![Link::plain(End::Step(index))],
        )
    }

    /// One node occurrence: the step call, spanned at the user's node.
    fn node(&mut self, node: &NodeRef, input: Value, from: Vec<Link>, condition: bool) -> Expanded {
        let private = self.private;
        let index = self.steps.len();
        let path = &node.path;
        let alias = format_ident!("__nanoflow_s{}", index);
        self.aliases.push(quote!(type #alias = #path;));
        let name = node.step_ident().to_string();
        self.node_steps.push((name.clone(), index));
        // The output's JSON Schema, when it has one, is part of the step's fingerprint.
        let shape = quote!(.with_output_schema(
            <#private::Probe<<#alias as #private::Node>::Output>>::json_schema(#private::Side::Output)
        ));
        self.steps.push(if condition {
            quote!(#private::Step::condition::<#alias>(#name) #shape)
        } else {
            quote!(#private::Step::of::<#alias>(#name) #shape)
        });
        for f in &from {
            self.edge(f, &End::Step(index));
        }
        let out = self.var();
        let span = node.step_ident().span();
        let in_var = &input.var;
        let compensation = self
            .compensations
            .iter()
            .position(|c| c.step == *node.step_ident());
        let record = compensation.map(|c| {
            let undo = self.compensations[c]
                .node
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            (format_ident!("__nanoflow_c{}", c), format!("{name}~{undo}"))
        });
        // The upstream type is given explicitly: with a single `Accepts` impl the compiler
        // would otherwise infer it from the impl and report a plain type mismatch. A value
        // whose type cannot be named (a `match` payload) is carried into a method instead,
        // whose receiver fixes the type first.
        let call = match (&input.ty, record) {
            (Some(in_ty), None) => quote!(
                __nanoflow_ctx.step_in::<#alias, #in_ty>(&__NANOFLOW_DEFAULTS, #name, #in_var).await
            ),
            (Some(in_ty), Some((undo, record))) => quote!(
                __nanoflow_ctx.step_compensated::<#alias, #in_ty, #undo>(&__NANOFLOW_DEFAULTS, #name, #record, #in_var).await
            ),
            (None, None) => quote!(
                #private::Carry(#in_var).step_in::<#alias>(__nanoflow_ctx, &__NANOFLOW_DEFAULTS, #name).await
            ),
            (None, Some((undo, record))) => quote!(
                #private::Carry(#in_var).step_compensated::<#alias, #undo>(__nanoflow_ctx, &__NANOFLOW_DEFAULTS, #name, #record).await
            ),
        };
        let call = respan(call, span);
        let stmts = quote! {
            let #out = #call?;
        };
        let ty = quote!(<#alias as #private::Node>::Output);
        (
            stmts,
            Value {
                var: out,
                ty: Some(ty),
            },
            vec![Link::plain(End::Step(index))],
        )
    }

    /// `(a, b -> c)`: each branch gets a copy of the input; they run concurrently.
    fn group(
        &mut self,
        paren: Span,
        branches: &[Chain],
        input: Value,
        from: Vec<Link>,
    ) -> Expanded {
        let private = self.private;
        let mut stmts = TokenStream::new();
        let mut futures = Vec::new();
        let mut results = Vec::new();
        let mut types = Vec::new();
        let mut exits = Vec::new();
        let count = branches.len();
        for (i, branch) in branches.iter().enumerate() {
            let arg = self.var();
            let in_var = &input.var;
            if i + 1 < count {
                let copy = respan(quote!(#private::fan_out(&#in_var)), paren);
                stmts.extend(quote!(let #arg = #copy;));
            } else {
                stmts.extend(quote!(let #arg = #in_var;));
            }
            let branch_in = Value {
                var: arg,
                ty: input.ty.clone(),
            };
            let (body, out, branch_exits) = self.chain(branch, branch_in, from.clone());
            let out_var = &out.var;
            futures.push(quote! {
                async move {
                    #body
                    ::core::result::Result::Ok::<_, #private::Error>(#out_var)
                }
            });
            results.push(self.var());
            types.push(out.named().clone());
            exits.extend(branch_exits);
        }
        let out = self.var();
        stmts.extend(quote! {
            let (#(#results,)*) = #private::tokio::try_join!(#(#futures),*)?;
            let #out = (#(#results,)*);
        });
        (
            stmts,
            Value {
                var: out,
                ty: Some(quote!((#(#types,)*))),
            },
            exits,
        )
    }

    /// The output of branch `index` of a `match` or `if`: the first as it is, the others
    /// converted to the first's type, or reported at their last step when they differ.
    fn rejoin(&self, index: usize, first: &TokenStream, out: &Value, body: &Chain) -> TokenStream {
        let private = self.private;
        let var = &out.var;
        if index == 0 {
            return quote!(#var);
        }
        let span = body.end_span().unwrap_or_else(Span::call_site);
        respan(quote!(#private::rejoin::<#first, _>(#var)), span)
    }

    /// `match { Variant(x) => chain, .. }`: a Rust `match` on the value, so rustc checks the
    /// variants, their payloads and exhaustiveness.
    fn match_(&mut self, m: &Match, input: Value, from: Vec<Link>) -> Expanded {
        // The value's type, for variants written without their enum: `Approved(a)` is
        // `__nanoflow_e0::Approved(a)`.
        let enum_alias = input.ty.as_ref().map(|ty| {
            let alias = format_ident!("__nanoflow_e{}", self.matches);
            self.matches += 1;
            self.aliases.push(quote!(type #alias = #ty;));
            alias
        });
        let mut arms = Vec::new();
        let mut exits = Vec::new();
        let mut first: Option<TokenStream> = None;
        for (i, arm) in m.arms.iter().enumerate() {
            let label = arm.pattern.label();
            let links: Vec<Link> = from.iter().map(|l| l.entering(&label)).collect();
            let (pattern, payload, payload_ty) =
                self.pattern(&arm.pattern, enum_alias.as_ref(), &input);
            let arm_in = self.var();
            let (body, out, arm_exits) = self.chain(
                &arm.body,
                Value {
                    var: arm_in.clone(),
                    ty: payload_ty,
                },
                links,
            );
            let first_ty = first.get_or_insert_with(|| out.named().clone()).clone();
            let result = self.rejoin(i, &first_ty, &out, &arm.body);
            // The arm ends where the user's arm ends (its statements keep their own spans):
            // rustc suggests a missing arm after the last one, in the user's graph.
            let end = arm.body.end_span().unwrap_or_else(Span::call_site);
            let mut block = Group::new(
                Delimiter::Brace,
                quote! {
                    let #arm_in = #payload;
                    #body
                    #result
                },
            );
            block.set_span(end);
            let arrow = quote_spanned!(end=> =>);
            arms.push(quote!(#pattern #arrow #block));
            exits.extend(arm_exits);
        }
        let out = self.var();
        // Spanned at `match`: a variant without an arm is reported there, as rustc does.
        let scrutinee = respan(input.var.to_token_stream(), m.keyword);
        let stmts = quote! {
            let #out = match #scrutinee {
                #(#arms)*
            };
        };
        let ty = first.expect("a `match` has arms");
        (
            stmts,
            Value {
                var: out,
                ty: Some(ty),
            },
            exits,
        )
    }

    /// An arm's pattern, the payload it gives the arm's first step, and the payload's type
    /// when it can be named.
    fn pattern(
        &mut self,
        pattern: &Pattern,
        enum_alias: Option<&syn::Ident>,
        input: &Value,
    ) -> (TokenStream, TokenStream, Option<TokenStream>) {
        let (path, fields) = match pattern {
            Pattern::Variant { path, fields } => (path, fields),
            Pattern::Wild(span) => {
                // Binds the whole value (the arm takes it), at the user's `_`.
                let rest = format_ident!("__nanoflow_rest", span = *span);
                return (quote!(#rest), quote!(#rest), input.ty.clone());
            }
        };
        let path = match enum_alias {
            Some(alias) if path.segments.len() == 1 && path.leading_colon.is_none() => {
                let variant = &path.segments[0];
                let alias = respan(alias.to_token_stream(), variant.ident.span());
                quote!(#alias::#variant)
            }
            _ => quote!(#path),
        };
        let mut bound = Vec::new();
        let mut field = |f: &FieldPat| match f {
            FieldPat::Bind(ident) => {
                let var = format_ident!("__nanoflow_p{}", bound.len(), span = ident.span());
                bound.push(var.clone());
                quote!(#var)
            }
            FieldPat::Skip(span) => quote_spanned!(*span=> _),
            FieldPat::Rest(span) => quote_spanned!(*span=> ..),
        };
        let pattern = match fields {
            Fields::Unit => path,
            Fields::Tuple(items) => {
                let items: Vec<TokenStream> = items.iter().map(&mut field).collect();
                quote!(#path(#(#items),*))
            }
            Fields::Struct(items) => {
                let items: Vec<TokenStream> = items
                    .iter()
                    .map(|(name, f)| match f {
                        FieldPat::Rest(span) => quote_spanned!(*span=> ..),
                        other => {
                            let pat = field(other);
                            quote!(#name: #pat)
                        }
                    })
                    .collect();
                quote!(#path { #(#items),* })
            }
        };
        let (payload, ty) = match bound.as_slice() {
            [] => (quote!(()), Some(quote!(()))),
            [one] => (quote!(#one), None),
            many => (quote!((#(#many),*)), None),
        };
        (pattern, payload, ty)
    }

    /// `if cond { a } else { b }`: the condition gets a copy of the value; the branch it
    /// chooses gets the value.
    fn if_(&mut self, i: &If, input: Value, from: Vec<Link>) -> Expanded {
        let private = self.private;
        let copy = self.var();
        let in_var = &input.var;
        let inspect = respan(quote!(#private::inspect(&#in_var)), i.keyword);
        let mut stmts = quote!(let #copy = #inspect;);
        let (cond_stmts, verdict, cond_exits) = self.node(
            &i.cond,
            Value {
                var: copy,
                ty: input.ty.clone(),
            },
            from,
            true,
        );
        stmts.extend(cond_stmts);
        let cond = cond_exits[0].clone();
        let mut branches = Vec::new();
        let mut exits = Vec::new();
        let mut first: Option<TokenStream> = None;
        for (index, (body, label)) in [(&i.then, "true"), (&i.otherwise, "false")]
            .into_iter()
            .enumerate()
        {
            let (stmts, out, branch_exits) = self.chain(
                body,
                Value {
                    var: input.var.clone(),
                    ty: input.ty.clone(),
                },
                vec![cond.entering(label)],
            );
            let first_ty = first.get_or_insert_with(|| out.named().clone()).clone();
            let result = self.rejoin(index, &first_ty, &out, body);
            branches.push(quote!({
                #stmts
                #result
            }));
            exits.extend(branch_exits);
        }
        let out = self.var();
        let verdict = &verdict.var;
        let holds = respan(
            quote!(#private::condition(#verdict)),
            i.cond.step_ident().span(),
        );
        let (then, otherwise) = (&branches[0], &branches[1]);
        stmts.extend(quote! {
            let #out = if #holds #then else #otherwise;
        });
        (
            stmts,
            Value {
                var: out,
                ty: first,
            },
            exits,
        )
    }

    /// `map(chain, concurrency = N, collect_errors)`: the chain runs once per item, each
    /// item in a context of its own (its steps journaled as `step[index]`).
    fn map(&mut self, m: &Map, input: Value, from: Vec<Link>) -> Expanded {
        let private = self.private;
        let concurrency = match m.concurrency() {
            Some(n) => quote!(#n),
            None => quote!(#private::DEFAULT_MAP_CONCURRENCY),
        };
        let collect_errors = m.collect_errors();
        let slot = self.maps.len();
        self.maps.push(TokenStream::new());
        let first_step = self.steps.len();
        // The collection's type, checked to be a collection at the `map` (one error there).
        let collection = input.ty.as_ref().map(|ty| {
            let alias = format_ident!("__nanoflow_m{}", slot);
            let checked = respan(
                quote!(#private::Checked<#ty, [(); #private::collection::<#ty>()]>),
                m.keyword.span(),
            );
            self.aliases.push(quote!(type #alias = #checked;));
            alias
        });
        let item = format_ident!("__nanoflow_item");
        let item_ty = collection
            .as_ref()
            .map(|c| quote!(<#c as ::core::iter::IntoIterator>::Item));
        let (body, out, exits) = self.chain(
            &m.body,
            Value {
                var: item.clone(),
                ty: item_ty,
            },
            from,
        );
        let steps: Vec<usize> = (first_step..self.steps.len()).collect();
        self.maps[slot] = quote!(#private::MapDef::new(
            ::std::vec![#(#steps),*],
            #concurrency,
            #collect_errors,
        ));
        let out_ty = out.named();
        let out_var = &out.var;
        let (method, ty) = if collect_errors {
            (
                quote!(map_results),
                quote!(::std::vec::Vec<::core::result::Result<#out_ty, #private::NodeError>>),
            )
        } else {
            (quote!(map), quote!(::std::vec::Vec<#out_ty>))
        };
        let turbofish = collection.map(|c| quote!(::<#c, _, _>));
        let result = self.var();
        let in_var = &input.var;
        let stmts = quote! {
            let #result = __nanoflow_ctx.#method #turbofish(
                #concurrency,
                #in_var,
                async |__nanoflow_ctx: &#private::RunCtx, #item| {
                    #body
                    ::core::result::Result::Ok::<_, #private::Error>(#out_var)
                },
            )
            .await?;
        };
        (
            stmts,
            Value {
                var: result,
                ty: Some(ty),
            },
            exits,
        )
    }
}

/// The workflow's input type: the first node's input, in a `Vec` for each `map(..)` the graph
/// starts with. Step 0 is that node.
fn input_type(private: &TokenStream, chain: &Chain) -> TokenStream {
    match chain.stages.first() {
        Some(Stage::Group { branches, .. }) if !branches.is_empty() => {
            input_type(private, &branches[0])
        }
        Some(Stage::Map(m)) => {
            let inner = input_type(private, &m.body);
            quote!(::std::vec::Vec<#inner>)
        }
        _ => quote!(<__nanoflow_s0 as #private::Node>::Input),
    }
}

fn expand_one(private: &TokenStream, wf: &WorkflowDecl) -> TokenStream {
    let name = &wf.name;
    let name_str = name.to_string();
    let vis = &wf.vis;
    let docs = &wf.docs;
    let doc_text: String = docs
        .iter()
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");

    let graph = wf.graph.as_ref().expect("not broken: the graph parsed");
    let entry = graph
        .entry()
        .expect("not broken: the graph has a first node");
    let (declaration, ty) = declare(wf);
    // Step 0 is always the entry node: its alias names the workflow's input type.
    let input_ty = input_type(private, graph);
    let mut gen = Gen {
        private,
        counter: 0,
        compensations: &wf.compensations,
        aliases: Vec::new(),
        steps: Vec::new(),
        node_steps: Vec::new(),
        edges: Vec::new(),
        labels: Vec::new(),
        maps: Vec::new(),
        matches: 0,
        signals: 0,
    };
    let input = format_ident!("__nanoflow_input");
    let start = Value {
        var: input.clone(),
        ty: Some(input_ty.clone()),
    };
    let (body, out, exits) = gen.chain(graph, start, vec![Link::plain(End::Input)]);
    let output_ty = out.named().clone();
    let out = out.var;
    for exit in &exits {
        gen.edge(exit, &End::Output);
    }
    let aliases = &gen.aliases;
    // One alias per compensation node, spanned at the user's path, and a check that it takes
    // the compensated step's output, reported there.
    let compensation_items = wf.compensations.iter().enumerate().filter_map(|(i, c)| {
        let step = c.step.to_string();
        let index = gen
            .node_steps
            .iter()
            .find(|(name, _)| *name == step)
            .map(|(_, index)| *index)?;
        let undo = format_ident!("__nanoflow_c{}", i);
        let step = format_ident!("__nanoflow_s{}", index);
        let path = &c.node;
        let check = crate::respan::respan(
            quote!(#private::compensates::<#step, #undo, <#step as #private::Node>::Output>),
            syn::spanned::Spanned::span(path),
        );
        Some(quote! {
            type #undo = #path;
            const _: () = { let _ = #check; };
        })
    });
    let d = &wf.defaults;
    let mut default_setters = Vec::new();
    if let Some(n) = d.retries {
        default_setters.push(quote!(.with_retries(#n)));
    }
    if let Some(ns) = d.backoff_ns {
        default_setters.push(quote!(.with_backoff(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some(ns) = d.max_backoff_ns {
        default_setters.push(quote!(.with_max_backoff(::core::time::Duration::from_nanos(#ns))));
    }
    if let Some(ns) = d.timeout_ns {
        default_setters.push(quote!(.with_timeout(::core::time::Duration::from_nanos(#ns))));
    }
    // `#[finishes(current)]`: the name it finishes runs of, read from that workflow (so a name
    // that is no workflow does not compile), and a check that both take the same input.
    let (finishes_setter, finishes_check) = match &wf.finishes {
        Some(path) => {
            let check = crate::respan::respan(
                quote!(#private::finishes::<#ty, #path>),
                syn::spanned::Spanned::span(path),
            );
            // The workflow's name is its identifier (`NAME`), checked by `finishes` to be one.
            let finished = path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default();
            (
                quote!(.with_finishes(#finished)),
                quote!(const _: () = { let _ = #check; };),
            )
        }
        None => (TokenStream::new(), TokenStream::new()),
    };
    let (limits_setter, limit_checks) = limits(private, wf, &input_ty);
    let timeout_setter = wf
        .timeout
        .map(|(ns, _)| quote!(.with_timeout(::core::time::Duration::from_nanos(#ns))));
    let signal_methods = signal_methods(private, wf, true);
    let steps = &gen.steps;
    let edges = &gen.edges;
    let labels = &gen.labels;
    let maps = &gen.maps;
    let trigger_defs = wf
        .triggers
        .iter()
        .map(|t| trigger::expand::definition(private, t));
    let trigger_checks = wf
        .triggers
        .iter()
        .map(|t| trigger::expand::check(private, t, &input_ty));
    let run_doc = format!("Runs `{name_str}` in-process on `input` and returns its output.");
    let graph_doc = format!("The graph of `{name_str}`: steps, edges, triggers and types.");

    // Always: even without a `#[compensate]` of its own, a workflow may have completed
    // sub-workflows (or map items) whose steps have compensations.
    let wrapped = quote!(async move {
        #private::with_compensation(__nanoflow_ctx, async move {
            #body
            ::core::result::Result::Ok(#out)
        })
        .await
    });

    let as_node = as_node(private, &ty, name, &input_ty, &output_ty);

    // `checkout.run(x)` with a wrong `x`: rustc shows where `run` is defined; let that be the
    // workflow's name, and the input the first node's.
    let run = respan(quote!(run), name.span());
    let input_param = respan(quote!(input: #input_ty), entry.step_ident().span());

    quote! {
        #declaration

        // The impls name the type through its module (see `declare`), where the plain name
        // would do too: not a qualification the user wrote.
        #[allow(unused_qualifications)]
        const _: () = {
            // `Probe<T>::IS_DATA` in a signal's checked type (see `checked_signal`).
            #[allow(unused_imports)]
            use #private::NotData as _;
            #(#aliases)*
            #(#compensation_items)*
            #finishes_check
            #limit_checks

            /// The workflow's `#[defaults(...)]`, under each node's own options.
            const __NANOFLOW_DEFAULTS: #private::NodeOptions =
                #private::NodeOptions::DEFAULT #(#default_setters)*;

            impl #private::Workflow for #ty {
                type Input = #input_ty;
                type Output = #output_ty;
                const NAME: &'static str = #name_str;

                fn graph(&self) -> &'static #private::Graph {
                    static GRAPH: ::std::sync::OnceLock<#private::Graph> = ::std::sync::OnceLock::new();
                    // Built with the runtime's setters, never as a literal (see `Graph::new`).
                    GRAPH.get_or_init(|| {
                        // `Probe<T>`'s own `json_schema` when `T: JsonSchema`, else `NoSchema`'s.
                        #[allow(unused_imports)]
                        use #private::NoSchema as _;
                        #private::Graph::new::<#input_ty, #output_ty>(#name_str)
                            .with_doc(#doc_text)
                            #finishes_setter
                            #limits_setter
                            #timeout_setter
                            .with_steps(::std::vec![#(#steps),*])
                            .with_edges(::std::vec![#(#edges),*])
                            .with_labels(::std::vec![#(#labels),*])
                            .with_maps(::std::vec![#(#maps),*])
                            .with_triggers(::std::vec![#(#trigger_defs),*])
                    })
                }

                fn schemas(&self) -> (
                    ::core::option::Option<#private::serde_json::Value>,
                    ::core::option::Option<#private::serde_json::Value>,
                ) {
                    // `Probe<T>`'s own `json_schema` when `T: JsonSchema`, else `NoSchema`'s `None`.
                    #[allow(unused_imports)]
                    use #private::NoSchema as _;
                    (
                        <#private::Probe<#input_ty>>::json_schema(#private::Side::Input),
                        <#private::Probe<#output_ty>>::json_schema(#private::Side::Output),
                    )
                }

                #[allow(clippy::let_unit_value, clippy::redundant_clone)]
                fn execute<'__nanoflow_a>(
                    &'__nanoflow_a self,
                    __nanoflow_ctx: &'__nanoflow_a #private::RunCtx,
                    #input: #input_ty,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<#output_ty, #private::Error>,
                > + ::core::marker::Send + '__nanoflow_a {
                    #wrapped
                }
            }

            #as_node

            impl #ty {
                #[doc = #run_doc]
                #[allow(dead_code)]
                #vis async fn #run(&self, #input_param) -> ::core::result::Result<#output_ty, #private::Error> {
                    <Self as #private::Workflow>::run(self, input).await
                }

                #[doc = #graph_doc]
                #[allow(dead_code)]
                #vis fn graph(&self) -> &'static #private::Graph {
                    <Self as #private::Workflow>::graph(self)
                }

                #signal_methods
            }

            #(#trigger_checks)*
        };
    }
}

/// `#[limit(..)]`s: the graph's setter, and a function the compiler checks (never called) that
/// reads the key and priority fields of the input, so a missing field, or a priority that is not
/// an integer, is reported at the user's field.
fn limits(
    private: &TokenStream,
    wf: &WorkflowDecl,
    input_ty: &TokenStream,
) -> (TokenStream, TokenStream) {
    let l = &wf.limits;
    if l.limits.is_empty() {
        return (TokenStream::new(), TokenStream::new());
    }
    let items = l.limits.iter().map(|(limit, _)| match *limit {
        Limit::Concurrency(n) => quote!(#private::Limit::Concurrency(#n)),
        Limit::Rate { count, per_ns } => quote!(#private::Limit::Rate {
            count: #count,
            per: ::core::time::Duration::from_nanos(#per_ns),
        }),
        Limit::Debounce(ns) => {
            quote!(#private::Limit::Debounce(::core::time::Duration::from_nanos(#ns)))
        }
    });
    let path = |p: &Option<super::ast::FieldPath>| match p {
        Some(p) => {
            let parts = p.parts();
            quote!(::core::option::Option::Some(&[#(#parts),*]))
        }
        None => quote!(::core::option::Option::None),
    };
    let (key, priority) = (path(&l.key), path(&l.priority));
    let setter = quote!(.with_limits(::std::vec![#(#items),*], #key, #priority));
    let input = format_ident!("__nanoflow_limited");
    let key_check = l.key.as_ref().map(|p| {
        let members = &p.members;
        let read = respan(quote!(&#input #(.#members)*), p.span);
        quote!(let _ = #read;)
    });
    let priority_check = l.priority.as_ref().map(|p| {
        let members = &p.members;
        let read = respan(quote!(#private::priority(&#input #(.#members)*)), p.span);
        quote!(#read;)
    });
    let checks = quote! {
        #[allow(dead_code)]
        fn __nanoflow_limit_fields(#input: &#input_ty) {
            #key_check
            #priority_check
        }
    };
    (setter, checks)
}

/// The type of a signal's value, `ty` itself when it is data; otherwise one error at `ty` (see
/// `__private::Probe`). `NotData` must be in scope.
fn checked_signal(private: &TokenStream, ty: &syn::Type) -> TokenStream {
    let probe = quote!(<#private::Probe<#ty>>::IS_DATA);
    let message = format!(
        "`{}` cannot be a signal's value: add `#[derive(serde::Serialize, serde::Deserialize)]` to it (signals are sent as JSON, and must be owned, `Send` and `Sync`)",
        crate::respan::type_text(ty)
    )
    .replace('{', "{{")
    .replace('}', "}}");
    let panic = crate::respan::respan_over(quote!(::core::panic!(#message)), ty);
    quote! {
        <#private::Pick<{ #probe }> as #private::Choose<#ty, [(); if #probe { 0 } else { #panic }]>>::Type
    }
}

/// `signal_<name>(run_id, value)` for each `signal(name: T, ..)` of the graph, and `signal` when
/// there is exactly one. `checked`: the `n`th signal's type has its checked alias
/// `__nanoflow_g{n}` (not in a stub).
fn signal_methods(private: &TokenStream, wf: &WorkflowDecl, checked: bool) -> TokenStream {
    let Some(graph) = &wf.graph else {
        return TokenStream::new();
    };
    let vis = &wf.vis;
    let workflow = wf.name.to_string();
    let mut steps = Vec::new();
    graph.steps(&mut steps);
    let signals: Vec<&Signal> = steps
        .into_iter()
        .filter_map(|s| match s {
            StepRef::Signal(s) => Some(s),
            _ => None,
        })
        .collect();
    let method = |ident: syn::Ident, index: usize, signal: &Signal| {
        let ty = &signal.ty;
        let sent = if checked {
            format_ident!("__nanoflow_g{}", index).to_token_stream()
        } else {
            ty.to_token_stream()
        };
        let name = signal.name.to_string();
        let doc = format!(
            "Sends signal `{name}` to run `run_id` of `{workflow}`: the run waiting at its step `{name}` goes on with `value`."
        );
        quote! {
            #[doc = #doc]
            #[allow(dead_code)]
            #vis async fn #ident(
                &self,
                run_id: #private::RunId,
                value: #ty,
            ) -> ::core::result::Result<(), #private::SignalError> {
                #private::send_signal::<#sent>(
                    <Self as #private::Workflow>::NAME,
                    run_id,
                    #name,
                    &value,
                )
                .await
            }
        }
    };
    let mut out: TokenStream = signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            method(
                format_ident!("signal_{}", s.name, span = s.name.span()),
                i,
                s,
            )
        })
        .collect();
    if let [only] = signals.as_slice() {
        out.extend(method(
            format_ident!("signal", span = only.name.span()),
            0,
            only,
        ));
    }
    out
}

/// The workflow as a node, for use in other workflows (a sub-workflow): its `Node` impl runs
/// its graph inside the parent's run, and its `Accepts` impl lets the parent's edges check it
/// like any node.
fn as_node(
    private: &TokenStream,
    ty: &TokenStream,
    name: &syn::Ident,
    input_ty: &TokenStream,
    output_ty: &TokenStream,
) -> TokenStream {
    // At the workflow's name: where rustc shows "`Accepts<u64, u64>` is implemented" beside
    // an edge that gives the sub-workflow the wrong type.
    let accepts = respan(
        quote! {
            impl #private::Accepts<#input_ty, #input_ty> for #ty {
                #[inline(always)]
                fn into_input(value: #input_ty) -> #input_ty {
                    value
                }
            }
        },
        name.span(),
    );
    let name = name.to_string();
    quote! {
        impl #private::Node for #ty {
            type Input = #input_ty;
            type Output = #output_ty;
            type State = ();
            const NAME: &'static str = #name;
            const OPTIONS: #private::NodeOptions = #private::NodeOptions::DEFAULT;

            fn call(input: #input_ty) -> impl ::core::future::Future<
                Output = ::core::result::Result<#output_ty, #private::NodeError>,
            > + ::core::marker::Send {
                #private::run_as_node(#ty, input)
            }

            fn duplicate(input: &#input_ty) -> ::core::result::Result<#input_ty, #private::NodeError> {
                #[allow(unused_imports)]
                use #private::{DuplicateByClone as _, DuplicateByJson as _};
                (&#private::Duplicate(input)).__nanoflow_duplicate()
            }

            fn run_step<'__nanoflow_a>(
                ctx: &'__nanoflow_a #private::RunCtx,
                _: &'static #private::NodeOptions,
                name: &'static str,
                input: #input_ty,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#output_ty, #private::Error>,
            > + ::core::marker::Send + '__nanoflow_a {
                ctx.sub_workflow(#ty, name, input)
            }

            fn subgraph() -> ::core::option::Option<&'static #private::Graph> {
                ::core::option::Option::Some(<Self as #private::Workflow>::graph(&#ty))
            }
        }

        #accepts
    }
}

/// Declares the workflow's unit type, in a module of its own re-exported under the workflow's
/// name. Returns the items and the type's path for the impls.
///
/// The module makes a workflow declared twice in one module (by two `workflow!` invocations) a
/// single error, "the name `checkout` is defined multiple times", at the second name: the impls
/// of each invocation name its own type through its own module, so they do not conflict. The
/// module's name is unique to the declaration (its name and the position of the name's token).
fn declare(wf: &WorkflowDecl) -> (TokenStream, TokenStream) {
    let name = &wf.name;
    let vis = &wf.vis;
    let docs = &wf.docs;
    let mut hasher = DefaultHasher::new();
    name.to_string().hash(&mut hasher);
    format!("{:?}", name.span()).hash(&mut hasher);
    let module = format_ident!("__nanoflow_workflow_{}_{:016x}", name, hasher.finish());
    let import = respan(quote!(#module::#name), name.span());
    // Named like one of its nodes: that is reported, and the name is left to the node.
    let import = match wf.node_named_like_it() {
        None => quote! {
            #[allow(unused_imports)]
            #vis use #import;
        },
        Some(_) => TokenStream::new(),
    };
    let items = quote! {
        #[doc(hidden)]
        #[allow(non_snake_case)]
        mod #module {
            #(#docs)*
            #[allow(non_camel_case_types, unreachable_pub)]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, ::core::marker::Copy)]
            pub struct #name;
        }

        #import
    };
    (items, quote!(#module::#name))
}

/// Beside an error that leaves the graph unusable (empty, an empty group, a syntax error): the
/// workflow is still declared, with its input and output poisoned by the first error so that
/// uses of it (`checkout.run(x)`, `Runner::new().workflow(checkout)`) add no errors of their own.
fn stub(private: &TokenStream, wf: &WorkflowDecl, errors: &[syn::Error]) -> TokenStream {
    let Some((first, rest)) = errors.split_first() else {
        return TokenStream::new();
    };
    let name_str = wf.name.to_string();
    let vis = &wf.vis;
    let (declaration, ty) = declare(wf);
    let poisoned = poison::poisoned_type(first);
    let rest = poison::report(rest);
    let poisoned_alias = quote!(__nanoflow_poisoned);
    let signal_methods = signal_methods(private, wf, false);
    let as_node = as_node(private, &ty, &wf.name, &poisoned_alias, &poisoned_alias);
    // The node names that were read are still resolved, so an unknown one is reported too.
    let mut nodes = Vec::new();
    if let Some(graph) = &wf.graph {
        graph.nodes(&mut nodes);
    }
    let aliases = nodes.iter().enumerate().map(|(i, node)| {
        let alias = format_ident!("__nanoflow_s{}", i);
        let path = &node.path;
        quote!(#[allow(dead_code)] type #alias = #path;)
    });
    quote! {
        #declaration

        // The impls name the type through its module (see `declare`), where the plain name
        // would do too: not a qualification the user wrote.
        #[allow(unused_qualifications)]
        const _: () = {
            type __nanoflow_poisoned = #poisoned;
            #(#aliases)*

            impl #private::Workflow for #ty {
                type Input = __nanoflow_poisoned;
                type Output = __nanoflow_poisoned;
                const NAME: &'static str = #name_str;

                fn graph(&self) -> &'static #private::Graph {
                    ::core::unreachable!()
                }

                fn execute<'__nanoflow_a>(
                    &'__nanoflow_a self,
                    _: &'__nanoflow_a #private::RunCtx,
                    _: __nanoflow_poisoned,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<__nanoflow_poisoned, #private::Error>,
                > + ::core::marker::Send + '__nanoflow_a {
                    ::core::future::pending()
                }
            }

            #as_node

            impl #ty {
                #[allow(dead_code, missing_docs)]
                #vis async fn run(
                    &self,
                    _: __nanoflow_poisoned,
                ) -> ::core::result::Result<__nanoflow_poisoned, #private::Error> {
                    ::core::unreachable!()
                }

                #[allow(dead_code, missing_docs)]
                #vis fn graph(&self) -> &'static #private::Graph {
                    ::core::unreachable!()
                }

                #signal_methods
            }
        };

        #rest
    }
}
