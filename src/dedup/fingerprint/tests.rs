//! The fingerprint's tests: how two texts compare (reposts, templates, numbers and versions,
//! swapped words), key terms, and the term statistics' stored form.

use super::*;

#[test]
fn labels_around_titles_are_removed() {
    assert_eq!(
        clean_title("【独家】OpenAI 发布 GPT-6 | 量子位"),
        "openai 发布 gpt-6"
    );
    assert_eq!(
        clean_title("Exclusive: Lab ships model - The Verge"),
        "lab ships model"
    );
    assert_eq!(clean_title("重磅！智谱发布新模型"), "智谱发布新模型");
    assert_eq!(clean_title("[快讯] 百度发布文心 5.0"), "百度发布文心 5.0");
}

/// Statistics of a small day of news, as the store would have them.
fn stats_of(docs: &[(&str, &str)]) -> TermStats {
    let mut stats = TermStats::default();
    for (title, body) in docs {
        stats.add(&Fingerprint::new(title, body));
    }
    stats
}

const DAY: &[(&str, &str)] = &[
    (
        "OpenAI 发布 GPT-6，支持百万 token 上下文",
        "OpenAI 今天发布了 GPT-6 模型，上下文长度达到一百万 token。",
    ),
    (
        "【快讯】OpenAI发布GPT-6:支持百万token上下文 | 新智元",
        "据悉，OpenAI 今天发布了 GPT-6 模型，上下文长度达到一百万 token。",
    ),
    (
        "OpenAI 成立 GPT-6 安全委员会",
        "OpenAI 宣布成立新的安全委员会，负责审查 GPT-6 的发布。",
    ),
    ("百度发布文心 5.0", "百度今天发布文心大模型 5.0。"),
    ("阿里发布通义千问新模型", "阿里巴巴今天发布新模型。"),
    (
        "Nvidia unveils new inference chip",
        "Nvidia today unveiled a chip for inference.",
    ),
    (
        "Anthropic raises Series F",
        "Anthropic raised money from investors today.",
    ),
    ("智谱发布新模型", "智谱今天发布了新模型。"),
];

#[test]
fn reposts_score_high_and_different_stories_low() {
    let stats = stats_of(DAY);
    let fp = |i: usize| Fingerprint::new(DAY[i].0, DAY[i].1);
    let same = fp(0).similarity(&fp(1), &stats);
    let different = fp(0).similarity(&fp(2), &stats);
    assert!(same.score > 0.7, "{same:?}");
    assert!(different.score < 0.45, "{different:?}");
}

#[test]
fn a_shared_boilerplate_body_does_not_merge_different_titles() {
    let footer = "Subscribe to our newsletter for daily AI news. Follow us for more stories about machine learning and startups.";
    let stats = stats_of(DAY);
    let a = Fingerprint::new("Nvidia unveils new inference chip", footer);
    let b = Fingerprint::new("Anthropic raises Series F at $90B valuation", footer);
    assert_eq!(
        a.similarity(&b, &stats).score,
        0.0,
        "{:?}",
        a.similarity(&b, &stats)
    );
}

#[test]
fn one_template_with_a_name_swapped_is_two_stories() {
    let stats = stats_of(DAY);
    let a = Fingerprint::new("Agent 创业公司 Loopwise 完成 3000 万美元 A 轮融资", "");
    let b = Fingerprint::new("Agent 创业公司 Tidewell 完成 3000 万美元 A 轮融资", "");
    let s = a.similarity(&b, &stats);
    assert!(
        s.conflict.is_some() && s.score <= s.text * CONFLICT_FACTOR,
        "{s:?}"
    );
    let c = Fingerprint::new("AI早报｜11月10日", "");
    let d = Fingerprint::new("AI早报｜11月9日", "");
    assert_eq!(c.similarity(&d, &stats).conflict, Some(Conflict::Numbers));
}

/// The same name with another version is another story, whatever the words or the
/// meanings around it say; the same version written two ways is not.
#[test]
fn versions_of_one_name_are_different_stories() {
    let stats = stats_of(DAY);
    let body = "The lab released the model today, with open weights and a longer context.";
    let with_meaning = |title: &str| Fingerprint {
        meaning: Some(Meaning {
            model: 1,
            values: vec![40; 384],
        }),
        ..Fingerprint::new(title, body)
    };
    for (a, b) in [
        (
            "DeepSeek V2 released with open weights",
            "DeepSeek V3 released with open weights",
        ),
        (
            "Qwen2.5 正式发布，开源全部权重",
            "Qwen3 正式发布，开源全部权重",
        ),
        ("月之暗面发布 Kimi K1.5", "月之暗面发布 Kimi K2"),
        (
            "OpenAI makes GPT-4o free for all users",
            "OpenAI makes GPT-5 free for all users",
        ),
        (
            "深度求索发布 DeepSeek-V2 模型",
            "深度求索发布 DeepSeek-V3 模型",
        ),
    ] {
        let s = with_meaning(a).similarity(&with_meaning(b), &stats);
        assert_eq!(s.conflict, Some(Conflict::Numbers), "{a} / {b}: {s:?}");
        assert!(s.meaning > Some(0.99) && s.score == 0.0, "{a} / {b}: {s:?}");
        assert!(!s.same_story(0.5, 0.9675), "{a} / {b}: {s:?}");
    }
    for (a, b) in [
        (
            "Qwen2.5 正式发布，开源全部权重",
            "Qwen 2.5 正式发布，开源全部权重",
        ),
        (
            "DeepSeek-V3.0 released with open weights",
            "DeepSeek V3 released with open weights",
        ),
    ] {
        let s = with_meaning(a).similarity(&with_meaning(b), &stats);
        assert_eq!(s.conflict, None, "{a} / {b}: {s:?}");
        assert!(s.same_story(0.5, 0.9675), "{a} / {b}: {s:?}");
    }
}

/// A number or version only one title has, and a number written two ways, leave a clear
/// match whole.
#[test]
fn a_number_in_one_title_only_does_not_halve_a_match() {
    let stats = stats_of(DAY);
    let body = "Anthropic said the model reads 2 million tokens at once and costs the same.";
    let a = Fingerprint::new(
        "Anthropic's Claude 6 gets a 2-million-token context window",
        body,
    );
    let b = Fingerprint::new(
        "Anthropic's Claude gets a 2 million token context window",
        body,
    );
    let s = a.similarity(&b, &stats);
    assert_eq!(s.conflict, None, "{s:?}");
    assert!(s.score > 0.9, "{s:?}");
}

/// A swapped word is another story unless the leads agree: then it is a repost that
/// reworded its title.
#[test]
fn a_swapped_word_is_forgiven_when_the_leads_agree() {
    let stats = stats_of(DAY);
    let a = Fingerprint::new(
        "智谱推出新一代旗舰模型",
        "据悉，智谱上线新一代旗舰模型，在编程和数学评测上超过上一代。",
    );
    let b = Fingerprint::new(
        "智谱上线新一代旗舰模型",
        "智谱推出新一代旗舰模型，编程和数学评测超过上一代，开发者可通过开放平台调用。",
    );
    let reworded = a.similarity(&b, &stats);
    // Leads that agree this much, short of a copy, confirm a reworded title.
    assert!(
        (WORD_SWAP_FORGIVEN..LEADS_AGREE).contains(&reworded.body),
        "{reworded:?}"
    );
    assert_eq!(reworded.conflict, None);
    let other = Fingerprint::new("智谱上线新一代旗舰模型", "价格战再升级，多家厂商宣布降价。");
    assert_eq!(a.similarity(&other, &stats).conflict, Some(Conflict::Word));
}

#[test]
fn rare_terms_weigh_more_and_key_the_index() {
    let stats = stats_of(DAY);
    let a = Fingerprint::new("Google DeepMind releases Gemini 4 with agent mode", "");
    let b = Fingerprint::new(
        "Google DeepMind releases Gemini 4, with agent mode - TechCrunch",
        "",
    );
    let keys = a.key_terms(&stats);
    assert_eq!(keys.len(), KEY_TERMS);
    assert!(b.key_terms(&stats).iter().any(|k| keys.contains(k)));
    let openai = short(hash_str("openai"));
    let gemini = short(hash_str("gemini"));
    assert!(stats.idf(gemini) > stats.idf(openai));
    assert_eq!(stats.document_frequency(openai), 3);
}

#[test]
fn strongest_terms_are_kept_and_statistics_survive_a_round_trip() {
    let stats = stats_of(DAY);
    let long: String = (0..200).map(|i| format!("word{i} ")).collect();
    let mut fp = Fingerprint::new("A long item", &long);
    assert!(fp.terms.len() > MAX_TERMS);
    fp.keep_strongest(&stats);
    assert_eq!(fp.terms.len(), MAX_TERMS);
    assert!(fp.terms.windows(2).all(|w| w[0].hash < w[1].hash));
    let back = TermStats::from_bytes(&stats.to_bytes()).expect("round trip");
    assert_eq!(back.docs(), stats.docs());
    assert_eq!(back.counts, stats.counts);
    assert!(TermStats::from_bytes(&[1, 2, 3]).is_none());
}

#[test]
fn statistics_counted_by_two_processes_merge_into_what_one_would_have_counted() {
    let (first, second) = DAY.split_at(DAY.len() / 2);
    let stored = stats_of(&first[..1]);
    // Two processes start from the stored statistics and count different items.
    let (mut a, mut b) = (stored.clone(), stored.clone());
    for (title, body) in &first[1..] {
        a.add(&Fingerprint::new(title, body));
    }
    for (title, body) in second {
        b.add(&Fingerprint::new(title, body));
    }
    // Each adds what it counted since it read them.
    let mut merged = stored.clone();
    merged.add_changes(&stored, &a);
    merged.add_changes(&stored, &b);
    let all = stats_of(DAY);
    assert_eq!(merged.docs(), all.docs());
    assert_eq!(merged.counts, all.counts);
}
