//! `#[edge_function]`, re-exported by `edge-hive-wasm`: keeps the function as written and adds the
//! guest ABI exports that call it. No syn: the only thing it needs is the function's name.

use proc_macro::{Delimiter, Group, Punct, Spacing, TokenStream, TokenTree};

#[proc_macro_attribute]
pub fn edge_function(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return compile_error("#[edge_function] takes no arguments");
    }
    let mut tokens = item.clone().into_iter();
    // Attributes, `pub(crate)` and the like are single groups, so the first `fn` ident is the keyword.
    let name = loop {
        match tokens.next() {
            Some(TokenTree::Ident(kw)) if kw.to_string() == "fn" => match tokens.next() {
                Some(TokenTree::Ident(name)) => break name,
                _ => return compile_error("#[edge_function]: expected a function name after `fn`"),
            },
            Some(_) => {}
            None => {
                return compile_error(
                    "#[edge_function] goes on a function: fn handler(req: Request) -> Result<Response, Error>",
                )
            }
        }
    };
    // The name keeps its span, so a wrong signature is reported at the handler.
    let mut out = item;
    out.extend(
        "::edge_hive_wasm::export_handler!"
            .parse::<TokenStream>()
            .unwrap(),
    );
    out.extend([
        TokenTree::Group(Group::new(
            Delimiter::Parenthesis,
            TokenTree::Ident(name).into(),
        )),
        TokenTree::Punct(Punct::new(';', Spacing::Alone)),
    ]);
    out
}

fn compile_error(message: &str) -> TokenStream {
    format!("::core::compile_error!({:?});", message)
        .parse()
        .unwrap()
}
