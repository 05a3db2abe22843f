//! Generates, for each workflow, a unit type implementing `Workflow` whose `execute` calls each
//! node directly: values move between in-process nodes without serialization, and parallel
//! branches are joined with `try_join!`.
//!
//! The macro never compares types. Each step is a call `ctx.step::<Node, Upstream>(..)` spanned
//! at the user's node token, whose `Accepts<Got, Takes>` bound makes the compiler report a
//! mismatched edge under the downstream node's name.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::ast::{Chain, Stage, WorkflowDecl, WorkflowFile};
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
    /// name that is not a node is reported once, there, and nowhere else.
    aliases: Vec<TokenStream>,
    /// Step descriptions in written order; their index is the step's index in the graph.
    steps: Vec<TokenStream>,
    edges: Vec<TokenStream>,
}

/// An endpoint of an edge while walking the graph.
#[derive(Clone)]
enum End {
    Input,
    Step(usize),
}

/// A value flowing through the graph: the variable holding it and its type.
struct Value {
    var: syn::Ident,
    ty: TokenStream,
}

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
        }
    }

    fn edge(&mut self, from: &End, to: &End) {
        let (a, b) = (self.endpoint(from), self.endpoint(to));
        self.edges.push(quote!((#a, #b)));
    }

    /// Emits statements running `chain` on `input` (produced by `from`), returning the
    /// statements, the chain's output, and the chain's exits.
    fn chain(
        &mut self,
        chain: &Chain,
        input: Value,
        from: Vec<End>,
    ) -> (TokenStream, Value, Vec<End>) {
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

    fn stage(
        &mut self,
        stage: &Stage,
        input: Value,
        from: Vec<End>,
    ) -> (TokenStream, Value, Vec<End>) {
        let private = self.private;
        match stage {
            Stage::Node(node) => {
                let index = self.steps.len();
                let path = &node.path;
                let alias = format_ident!("__nanoflow_s{}", index);
                self.aliases.push(quote!(type #alias = #path;));
                let name = node.step_ident().to_string();
                self.steps.push(quote!(#private::Step::of::<#alias>(#name)));
                for f in &from {
                    self.edge(f, &End::Step(index));
                }
                let out = self.var();
                let span = node.step_ident().span();
                // The upstream type is given explicitly: with a single `Accepts` impl the compiler
                // would otherwise infer it from the impl and report a plain type mismatch.
                let in_ty = &input.ty;
                let in_var = &input.var;
                let compensation = self
                    .compensations
                    .iter()
                    .position(|c| c.step == *node.step_ident());
                let call = match compensation {
                    None => respan(
                        quote!(__nanoflow_ctx.step_in::<#alias, #in_ty>(&__NANOFLOW_DEFAULTS, #name, #in_var).await),
                        span,
                    ),
                    Some(c) => {
                        let undo = format_ident!("__nanoflow_c{}", c);
                        let record = format!(
                            "{name}~{}",
                            self.compensations[c]
                                .node
                                .segments
                                .last()
                                .map(|s| s.ident.to_string())
                                .unwrap_or_default()
                        );
                        respan(
                            quote!(__nanoflow_ctx.step_compensated::<#alias, #in_ty, #undo>(&__NANOFLOW_DEFAULTS, #name, #record, #in_var).await),
                            span,
                        )
                    }
                };
                let stmts = quote! {
                    let #out = #call?;
                };
                let ty = quote!(<#alias as #private::Node>::Output);
                (stmts, Value { var: out, ty }, vec![End::Step(index)])
            }
            Stage::Group { branches, .. } if branches.len() == 1 => {
                self.chain(&branches[0], input, from)
            }
            Stage::Group { paren, branches } => {
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
                        let copy = respan(quote!(#private::fan_out(&#in_var)), *paren);
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
                    types.push(out.ty);
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
                        ty: quote!((#(#types,)*)),
                    },
                    exits,
                )
            }
        }
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
    let input_ty = quote!(<__nanoflow_s0 as #private::Node>::Input);
    let mut gen = Gen {
        private,
        counter: 0,
        compensations: &wf.compensations,
        aliases: Vec::new(),
        steps: Vec::new(),
        edges: Vec::new(),
    };
    let input = format_ident!("__nanoflow_input");
    let start = Value {
        var: input.clone(),
        ty: input_ty.clone(),
    };
    let (body, out, exits) = gen.chain(graph, start, vec![End::Input]);
    let output_ty = out.ty;
    let out = out.var;
    for exit in &exits {
        let from = gen.endpoint(exit);
        gen.edges.push(quote!((#from, #private::Endpoint::Output)));
    }
    let aliases = &gen.aliases;
    // One alias per compensation node, spanned at the user's path, and a check that it takes
    // the compensated step's output, reported there.
    let compensation_items = wf.compensations.iter().enumerate().filter_map(|(i, c)| {
        let index = {
            let mut nodes = Vec::new();
            graph.nodes(&mut nodes);
            nodes.iter().position(|n| *n.step_ident() == c.step)?
        };
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
    let mut default_fields = Vec::new();
    let mut default_bits = 0u8;
    if let Some(n) = d.retries {
        default_fields.push(quote!(retries: #n,));
        default_bits |= 1;
    }
    if let Some(ns) = d.backoff_ns {
        default_fields.push(quote!(backoff: ::core::time::Duration::from_nanos(#ns),));
        default_bits |= 2;
    }
    if let Some(ns) = d.max_backoff_ns {
        default_fields.push(quote!(max_backoff: ::core::time::Duration::from_nanos(#ns),));
        default_bits |= 4;
    }
    if let Some(ns) = d.timeout_ns {
        default_fields.push(
            quote!(timeout: ::core::option::Option::Some(::core::time::Duration::from_nanos(#ns)),),
        );
        default_bits |= 8;
    }
    let _ = default_bits;
    let steps = &gen.steps;
    let edges = &gen.edges;
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

    let wrapped = if wf.compensations.is_empty() {
        quote!(async move {
            #body
            ::core::result::Result::Ok(#out)
        })
    } else {
        quote!(async move {
            #private::with_compensation(__nanoflow_ctx, async move {
                #body
                ::core::result::Result::Ok(#out)
            })
            .await
        })
    };

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
            #(#aliases)*
            #(#compensation_items)*

            /// The workflow's `#[defaults(...)]`, under each node's own options.
            const __NANOFLOW_DEFAULTS: #private::NodeOptions = #private::NodeOptions {
                #(#default_fields)*
                ..#private::NodeOptions::DEFAULT
            };

            impl #private::Workflow for #ty {
                type Input = #input_ty;
                type Output = #output_ty;
                const NAME: &'static str = #name_str;

                fn graph(&self) -> &'static #private::Graph {
                    static GRAPH: ::std::sync::OnceLock<#private::Graph> = ::std::sync::OnceLock::new();
                    GRAPH.get_or_init(|| #private::Graph {
                        name: #name_str,
                        doc: #doc_text,
                        steps: ::std::vec![#(#steps),*],
                        edges: ::std::vec![#(#edges),*],
                        triggers: ::std::vec![#(#trigger_defs),*],
                        input_type: ::core::any::type_name::<#input_ty>(),
                        output_type: ::core::any::type_name::<#output_ty>(),
                    })
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
            }

            #(#trigger_checks)*
        };
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
            }
        };

        #rest
    }
}
