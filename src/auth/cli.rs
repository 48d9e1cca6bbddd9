//! The auth subcommands: `regate passwd add|rm`, `regate keygen`,
//! `regate token`. Owns their arguments and exit codes (0 done, 2 usage or
//! configuration problem, 1 anything else); calls [`super::htpasswd`],
//! [`super::token`] and the configuration loader. Passwords are read from
//! stdin or a prompt without echo, never from the command line.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::htpasswd::{self, Edit};
use super::token::{self, keys::KeyKind, Scope, Tokens};
use crate::config::{defaults, Settings};

#[derive(Subcommand, Debug)]
pub enum PasswdCommand {
    /// Add a user or change their password.
    Add {
        user: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "config/htpasswd")]
        file: PathBuf,
        /// bcrypt cost (4-31); each step doubles the work.
        #[arg(long, default_value_t = bcrypt::DEFAULT_COST)]
        cost: u32,
    },
    /// Remove a user.
    Rm {
        user: String,
        #[arg(long, default_value = "config/htpasswd")]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    #[arg(long, default_value = "config/token.key")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "es256")]
    pub alg: KeyKind,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[arg(long, short, default_value = defaults::CONFIG_FILE, env = "REGATE_CONFIG")]
    pub config: PathBuf,
    /// The account; leave out for an anonymous token.
    #[arg(long)]
    pub user: Option<String>,
    /// A scope such as repository:team/app:pull,push; repeat for more.
    #[arg(long)]
    pub scope: Vec<String>,
}

fn read_password(from_stdin: bool) -> std::io::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = prompt("Password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(std::io::Error::other("the passwords differ"));
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn prompt(label: &str) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let mut out = &tty;
    let _ = out.write_all(label.as_bytes());
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = out.write_all(b"\n");
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub fn passwd(cmd: PasswdCommand) -> ExitCode {
    let result = match cmd {
        PasswdCommand::Add {
            user,
            password_stdin,
            file,
            cost,
        } => {
            if !(4..=31).contains(&cost) {
                eprintln!("regate passwd: --cost must be between 4 and 31");
                return ExitCode::from(2);
            }
            let password = match read_password(password_stdin) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => {
                    eprintln!("regate passwd: the password is empty");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("regate passwd: cannot read the password: {e}");
                    return ExitCode::from(2);
                }
            };
            htpasswd::edit(
                &file,
                Edit::Set {
                    user: &user,
                    password: &password,
                    cost,
                },
            )
            .map(|existed| {
                println!(
                    "{} {user} in {}",
                    if existed { "updated" } else { "added" },
                    file.display()
                )
            })
        }
        PasswdCommand::Rm { user, file } => htpasswd::edit(&file, Edit::Remove { user: &user })
            .map(|existed| {
                if existed {
                    println!("removed {user} from {}", file.display())
                } else {
                    println!("{user} was not in {}", file.display())
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (htpasswd::HtpasswdError::BadUser(_) | htpasswd::HtpasswdError::NotAComponent(_)),
        ) => {
            eprintln!("regate passwd: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("regate passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn keygen(args: KeygenArgs) -> ExitCode {
    match token::keys::generate(args.alg, &args.out) {
        Ok(kid) => {
            println!(
                "wrote {} (private, mode 0600) and {}; kid {kid}",
                args.out.display(),
                args.out.with_extension("pub").display()
            );
            println!(
                "set [auth.token] signing_key = {:?}",
                args.out.display().to_string()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regate keygen: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn token(args: TokenArgs) -> ExitCode {
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let tokens = match Tokens::load(&settings.auth.token) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("regate token: auth.token: {e}");
            return ExitCode::from(2);
        }
    };
    let scopes = match Scope::parse_all(args.scope.iter().map(String::as_str)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("regate token: {e}");
            return ExitCode::from(2);
        }
    };
    let access = token::grant(&settings.auth.rules, args.user.as_deref(), &scopes);
    match tokens.issue(args.user.as_deref(), &access) {
        Ok(t) => {
            println!("{}", t.token);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("regate token: {e}");
            ExitCode::FAILURE
        }
    }
}
