use super::*;
use crate::proto::sync::{Bound, Mode, Range, SyncMessage};

fn alice() -> SigningKey {
    SigningKey::from_bytes(&[0xA1; 32])
}

fn bob() -> SigningKey {
    SigningKey::from_bytes(&[0xB0; 32])
}

fn create_op(creator: &SigningKey) -> (GroupId, SignedOp) {
    let key = creator.verifying_key().to_bytes();
    let salt = [5; 32];
    let group = GroupId::derive(&key, &salt);
    let op = SignedOp::sign(
        creator,
        group,
        Hlc { ms: 10, counter: 0 },
        Vec::new(),
        MembershipOp::Create {
            name: "등산 모임".into(),
            salt,
            members: vec![bob().verifying_key().to_bytes()],
        },
    );
    (group, op)
}

fn text(n: u8, body: &str) -> GroupPayload {
    GroupPayload::new(
        MessageId([n; 32]),
        Hlc {
            ms: 1_000 + u64::from(n),
            counter: 0,
        },
        GroupBody::Text(body.into()),
    )
}

#[test]
fn a_sealed_envelope_round_trips_and_opens_for_members() {
    let (group, create) = create_op(&alice());
    let mut key = SenderKey::generate().unwrap();
    let mut bob_chain = ReceiverChain::new(key.state());
    for payload in [
        text(1, "안녕"),
        GroupPayload::new(
            MessageId([2; 32]),
            Hlc { ms: 20, counter: 1 },
            GroupBody::Membership(create.clone()),
        ),
    ] {
        let envelope = GroupEnvelope::seal(&mut key, &alice(), &group, &payload).unwrap();
        let bytes = envelope.encode();
        let decoded = GroupEnvelope::decode(&bytes).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(decoded.gossip_id(), gossip_message_id(&bytes));
        assert_eq!(decoded.open(&mut bob_chain).unwrap(), payload);
        // Gossip sees neither the text nor the name.
        let haystack = String::from_utf8_lossy(&bytes);
        assert!(!haystack.contains("안녕") && !haystack.contains("등산"));
    }
}

#[test]
fn a_forged_or_altered_envelope_is_refused_before_decrypting() {
    let (group, _) = create_op(&alice());
    let mut key = SenderKey::generate().unwrap();
    let mut chain = ReceiverChain::new(key.state());
    let envelope = GroupEnvelope::seal(&mut key, &alice(), &group, &text(1, "hi")).unwrap();

    let mut claimed = envelope.clone();
    claimed.sender = bob().verifying_key().to_bytes();
    let mut shifted = envelope.clone();
    shifted.iteration += 1;
    let mut flipped = envelope.clone();
    flipped.ciphertext[0] ^= 1;
    for bad in [claimed, shifted, flipped] {
        assert_eq!(
            bad.open(&mut chain),
            Err(GroupError::Crypto(GroupCryptoError::BadSignature))
        );
    }
    // Nothing above burned the key.
    assert_eq!(envelope.open(&mut chain).unwrap(), text(1, "hi"));
    // Bob, a member, re-sealing under his own signature cannot pass as Alice's chain.
    let mut bob_key = SenderKey::from_state(key.state().clone());
    let mut impostor =
        GroupEnvelope::seal(&mut bob_key, &bob(), &group, &text(2, "from alice?")).unwrap();
    impostor.sender = alice().verifying_key().to_bytes();
    assert!(impostor.open(&mut chain).is_err());
}

#[test]
fn envelope_limits_hold() {
    let (group, _) = create_op(&alice());
    let mut key = SenderKey::generate().unwrap();
    let big = text(1, &"가".repeat(MAX_TEXT_BYTES / 3));
    let envelope = GroupEnvelope::seal(&mut key, &alice(), &group, &big).unwrap();
    assert!(envelope.encode().len() <= MAX_GROUP_ENVELOPE_BYTES);
    assert!(matches!(
        GroupEnvelope::decode(&vec![0; MAX_GROUP_ENVELOPE_BYTES + 1]),
        Err(WireError::TooLarge { .. })
    ));
    let mut trailing = envelope.encode();
    trailing.push(0);
    assert!(GroupEnvelope::decode(&trailing).is_err());
    let mut short_signature = envelope.clone();
    short_signature.signature.pop();
    assert!(GroupEnvelope::decode(&short_signature.encode()).is_err());
    let mut future = envelope.clone();
    future.version = 2;
    assert!(matches!(
        GroupEnvelope::decode(&future.encode()),
        Err(WireError::UnknownVersion { version: 2, .. })
    ));
    let mut fat = envelope;
    fat.ciphertext = vec![0; MAX_GROUP_CIPHERTEXT + 1];
    assert!(GroupEnvelope::decode(&fat.encode()).is_err());
    for garbage in [&b""[..], &[1, 0xff, 0xff, 0xff, 0xff, 0x0f][..]] {
        assert!(GroupEnvelope::decode(garbage).is_err());
    }
}

#[test]
fn payload_limits_hold() {
    let long = text(1, &"x".repeat(MAX_TEXT_BYTES + 1));
    assert_eq!(
        GroupPayload::decode(&long.encode()),
        Err(WireError::Limit("message text too long"))
    );
    let (_, mut forged) = create_op(&alice());
    forged.hlc.ms += 1;
    let payload = GroupPayload::new(
        MessageId([3; 32]),
        Hlc::default(),
        GroupBody::Membership(forged),
    );
    assert!(GroupPayload::decode(&payload.encode()).is_err());
    let ok = text(4, "fine");
    assert_eq!(GroupPayload::decode(&ok.encode()), Ok(ok));
}

#[test]
fn membership_ops_verify_and_bind_the_creator() {
    let (group, create) = create_op(&alice());
    create.verify().unwrap();
    assert_eq!(create.id(), create.clone().id(), "stable id");
    // Bob cannot found Alice's group, even with her salt.
    let MembershipOp::Create { salt, .. } = &create.op else {
        unreachable!()
    };
    let usurper = SignedOp::sign(
        &bob(),
        group,
        Hlc::default(),
        Vec::new(),
        MembershipOp::Create {
            name: "mine".into(),
            salt: *salt,
            members: vec![],
        },
    );
    assert!(usurper.verify().is_err());
    let add = SignedOp::sign(
        &bob(),
        group,
        Hlc { ms: 11, counter: 0 },
        Vec::new(),
        MembershipOp::Add { member: [9; 32] },
    );
    add.verify().unwrap();
    let mut moved = add.clone();
    moved.op = MembershipOp::Add { member: [8; 32] };
    assert!(moved.verify().is_err());
    assert_ne!(moved.id(), add.id());
    let crowded = SignedOp::sign(
        &alice(),
        group,
        Hlc::default(),
        Vec::new(),
        MembershipOp::Create {
            name: "crowd".into(),
            salt: *salt,
            members: vec![[1; 32]; MAX_MEMBERS],
        },
    );
    assert!(crowded.verify().is_err());
}

#[test]
fn distributions_round_trip_and_split_large_op_logs() {
    let (group, create) = create_op(&alice());
    let key = SenderKey::generate().unwrap();
    let single = SenderKeyDistribution::build(group, key.state(), std::slice::from_ref(&create));
    assert_eq!(single.len(), 1);
    let decoded = SenderKeyDistribution::decode(&single[0].encode()).unwrap();
    assert_eq!(decoded, single[0]);
    assert_eq!(&decoded.chain_state(), key.state());

    let mut ops = vec![create];
    ops.extend((0..600u32).map(|i| {
        SignedOp::sign(
            &alice(),
            group,
            Hlc {
                ms: 100 + u64::from(i),
                counter: 0,
            },
            Vec::new(),
            MembershipOp::Add {
                member: [(i % 250) as u8; 32],
            },
        )
    }));
    let parts = SenderKeyDistribution::build(group, key.state(), &ops);
    assert!(parts.len() > 1);
    let mut rebuilt = Vec::new();
    for part in &parts {
        let bytes = part.encode();
        assert!(bytes.len() <= MAX_DISTRIBUTION_BYTES);
        let decoded = SenderKeyDistribution::decode(&bytes).unwrap();
        assert_eq!(decoded.chain_state(), *key.state());
        rebuilt.extend(decoded.ops);
    }
    assert_eq!(rebuilt, ops);
}

#[test]
fn distributions_refuse_foreign_or_forged_ops() {
    let (group, create) = create_op(&alice());
    let key = SenderKey::generate().unwrap();
    let (other_group, other_create) = create_op(&bob());
    assert_ne!(group, other_group);
    let mut foreign =
        SenderKeyDistribution::build(group, key.state(), std::slice::from_ref(&create));
    foreign[0].ops.push(other_create);
    assert!(SenderKeyDistribution::decode(&foreign[0].encode()).is_err());
    let mut forged = SenderKeyDistribution::build(group, key.state(), &[create]);
    forged[0].ops[0].hlc.counter += 1;
    assert!(SenderKeyDistribution::decode(&forged[0].encode()).is_err());
    assert!(matches!(
        SenderKeyDistribution::decode(&vec![0; MAX_DISTRIBUTION_BYTES + 1]),
        Err(WireError::TooLarge { .. })
    ));
}

#[test]
fn sync_frames_round_trip_and_limits_hold() {
    let (group, _) = create_op(&alice());
    let message = SyncMessage {
        ranges: vec![Range {
            upper: Bound::End,
            mode: Mode::Fingerprint([7; 16]),
        }],
    };
    let requests = [
        SyncRequest::Reconcile {
            group_id: group,
            message: message.clone(),
        },
        SyncRequest::Fetch {
            group_id: group,
            ids: vec![MessageId([1; 32])],
        },
        SyncRequest::Push {
            group_id: group,
            envelopes: vec![vec![1; 100]],
        },
    ];
    for request in requests {
        assert_eq!(SyncRequest::decode(&request.encode()), Ok(request));
    }
    let responses = [
        SyncResponse::Reconcile(message),
        SyncResponse::Envelopes(vec![vec![2; 300]]),
        SyncResponse::Accepted,
        SyncResponse::Refused("not a member".into()),
    ];
    for response in responses {
        assert_eq!(SyncResponse::decode(&response.encode()), Ok(response));
    }

    let refused = [
        SyncRequest::Fetch {
            group_id: group,
            ids: vec![],
        },
        SyncRequest::Fetch {
            group_id: group,
            ids: vec![MessageId([1; 32]); MAX_FETCH_IDS + 1],
        },
        SyncRequest::Push {
            group_id: group,
            envelopes: vec![vec![1; 10]; MAX_SYNC_ENVELOPES + 1],
        },
        SyncRequest::Push {
            group_id: group,
            envelopes: vec![vec![]],
        },
        SyncRequest::Reconcile {
            group_id: group,
            message: SyncMessage {
                ranges: vec![
                    Range {
                        upper: Bound::End,
                        mode: Mode::Skip,
                    },
                    Range {
                        upper: Bound::End,
                        mode: Mode::Skip,
                    },
                ],
            },
        },
    ];
    for request in refused {
        assert!(
            SyncRequest::decode(&request.encode()).is_err(),
            "{request:?}"
        );
    }
    let too_big = SyncResponse::Envelopes(vec![vec![1; MAX_GROUP_ENVELOPE_BYTES + 1]]);
    assert!(SyncResponse::decode(&too_big.encode()).is_err());
    let long = SyncResponse::Refused("x".repeat(1_000));
    assert!(SyncResponse::decode(&long.encode()).is_err());
    assert!(matches!(
        SyncRequest::decode(&vec![0; MAX_SYNC_FRAME_BYTES + 1]),
        Err(WireError::TooLarge { .. })
    ));
    for garbage in [
        &b""[..],
        &[9, 9, 9][..],
        &[2, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
    ] {
        assert!(SyncRequest::decode(garbage).is_err());
        assert!(SyncResponse::decode(garbage).is_err());
    }
}

#[test]
fn envelope_pages_fit_one_frame() {
    let envelopes: Vec<Vec<u8>> = (0..40).map(|_| vec![1; 60_000]).collect();
    let (page, consumed) = pack_envelopes(envelopes);
    assert_eq!(page.len(), consumed);
    assert!(page.len() < 40 && !page.is_empty());
    let frame = SyncResponse::Envelopes(page).encode();
    assert!(frame.len() <= MAX_SYNC_FRAME_BYTES);
    SyncResponse::decode(&frame).unwrap();

    let small: Vec<Vec<u8>> = (0..100).map(|_| vec![1; 10]).collect();
    let (page, consumed) = pack_envelopes(small);
    assert_eq!(
        (page.len(), consumed),
        (MAX_SYNC_ENVELOPES, MAX_SYNC_ENVELOPES)
    );
    let (page, consumed) = pack_envelopes([vec![0; MAX_GROUP_ENVELOPE_BYTES + 1], vec![1]]);
    assert_eq!((page, consumed), (vec![vec![1]], 2));
}
