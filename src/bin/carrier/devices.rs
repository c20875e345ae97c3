//! The commands about devices (protocol v2): `devices` (list, `add`,
//! `remove`), `link` on a new device, and `safety-number`.

use carrier::client::{Client, ClientError, DeviceInfo, show};
use serde_json::json;

use crate::args::{DevicesAction, Json};
use crate::{line, parse_phone, print};

pub async fn devices(
    client: &Client,
    action: Option<DevicesAction>,
    out: Json,
) -> Result<(), ClientError> {
    let session = client.login().await?;
    match action {
        None => {
            for d in session.devices().await? {
                line(&if out.json {
                    show::json(&d)
                } else {
                    device_line(&d)
                })?;
            }
        }
        Some(DevicesAction::Add) => {
            let (id, name) = session
                .add_device(|code| {
                    // Nobody reading the code (a closed pipe) is no reason
                    // to stop here: the line after it fails the same way.
                    let _ = line(&format!("Link code: {code}"));
                    eprintln!(
                        "On the new device run: carrier --server {} --home DIR link {} {code}",
                        client.server(),
                        client.account().map(|a| a.phone).unwrap_or_default()
                    );
                })
                .await?;
            print(out, json!({ "id": id, "name": name }), || {
                format!("Linked device {id} ({})", show::clean(&name))
            })?;
        }
        Some(DevicesAction::Remove { id }) => {
            let name = session.remove_device(id).await?;
            print(out, json!({ "removed": id, "name": name }), || {
                format!("Removed device {id} ({})", show::clean(&name))
            })?;
        }
    }
    session.close().await;
    Ok(())
}

/// `2  laptop  <fingerprint>  added <time>  last seen <time>  (this device)`
fn device_line(d: &DeviceInfo) -> String {
    let seen = if d.last_seen == 0 {
        "never".to_owned()
    } else {
        carrier::clock::utc(d.last_seen)
    };
    format!(
        "{}  {}  {}  added {}  last seen {}{}",
        d.id,
        show::clean(&d.name),
        d.fingerprint,
        carrier::clock::utc(d.added_at),
        seen,
        if d.this_device { "  (this device)" } else { "" }
    )
}

pub async fn link(client: &Client, phone: &str, code: &str, name: &str) -> Result<(), ClientError> {
    let phone = parse_phone(phone)?;
    let id = client.link(phone.as_str(), code, name).await?;
    line(&format!("Linked to {phone} as device {id}"))
}

pub async fn safety_number(client: &Client, phone: &str, out: Json) -> Result<(), ClientError> {
    let phone = parse_phone(phone)?;
    let session = client.login().await?;
    let number = session.safety_number(phone.as_str()).await?;
    print(
        out,
        json!({ "phone": phone.as_str(), "safety_number": number }),
        || number.clone(),
    )?;
    session.close().await;
    Ok(())
}
