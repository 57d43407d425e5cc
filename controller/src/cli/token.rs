//! `dimmer token create|revoke`: a tokens file that holds only digests,
//! written whole and renamed into place, so a controller reading it never
//! sees half a file.

use std::path::Path;

use anyhow::{bail, Context};

use crate::auth::tokens::{self, Role, TokenEntry, TokensFile};

fn read(file: &Path) -> anyhow::Result<TokensFile> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            // Checked as the controller checks it, so nothing is written
            // over a file it would refuse.
            tokens::parse_tokens(&text, file)?;
            Ok(serde_norway::from_str(&text)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
        Err(e) => Err(e).with_context(|| format!("{}", file.display())),
    }
}

fn write(file: &Path, tokens: &TokensFile) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `dimmer token`: digests only; the tokens were printed once.\n{}",
        serde_norway::to_string(tokens)?
    );
    crate::store::audit::write_private(file, text.as_bytes())
        .with_context(|| format!("{}", file.display()))?;
    Ok(())
}

pub fn create(name: &str, role: Role, teams: &[String], file: &Path) -> anyhow::Result<()> {
    crate::auth::tokens::check_token_name(name)?;
    let mut tokens = read(file)?;
    if tokens.tokens.iter().any(|t| t.name == name) {
        bail!("{}: a token named {name:?} exists; revoke it first, or create the next one under a new name (two may be valid at once while you rotate)", file.display());
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    tokens.tokens.push(TokenEntry {
        name: name.to_owned(),
        role,
        token: None,
        sha256: Some(hex::encode(tokens::digest(&token))),
        teams: (!teams.is_empty()).then(|| teams.to_vec()),
    });
    // The file as the controller will read it, before it is written.
    tokens::parse_tokens(&serde_norway::to_string(&tokens)?, file)?;
    write(file, &tokens)?;
    println!("{token}");
    eprintln!(
        "{name} ({role:?}) added to {}: the token above is shown once; a running controller accepts it within a second",
        file.display()
    );
    Ok(())
}

pub fn revoke(name: &str, file: &Path) -> anyhow::Result<()> {
    let mut tokens = read(file)?;
    let before = tokens.tokens.len();
    tokens.tokens.retain(|t| t.name != name);
    if tokens.tokens.len() == before {
        bail!("{}: no token named {name:?}", file.display());
    }
    write(file, &tokens)?;
    eprintln!(
        "{name} revoked in {}: a running controller refuses it within a second",
        file.display()
    );
    Ok(())
}
