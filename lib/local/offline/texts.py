"""The offline keyword baseline's en/zh sentence templates."""

from __future__ import annotations

T: dict[str, dict[str, str]] = {
    "en": {
        "note": "(Offline keyword baseline, no language model.)",
        "ocr_note": "(Offline keyword baseline on the text read from the image by OCR, "
        "no language model.)",
        "none": "none",
        "sep": ", ",
        "profile": "{who}. {count} position(s) listed{recent}. Skills named: {skills}.",
        "recent": "; most recent: {role} at {org}",
        "job_summary": "{title}{at}. The posting names {must} required and {nice} preferred "
        "qualification(s). Skills mentioned: {skills}.",
        "at": " at {company}",
        "assessment": "Keyword overlap score {score}/100. The résumé shows {mm} of the job's "
        "{m} required skills ({matched}) and {nm} of {n} preferred ones. Missing required "
        "skills: {missing}. This compares keywords only; read the posting for context.",
        "strength": "Matches the job's {kind} skill {skill}",
        "required": "required",
        "preferred": "preferred",
        "gap": "The job requires {skill}; the résumé does not mention it.",
        "suggestion": "If you have {skill} experience, add a concrete line about it; if not, "
        "say how you would learn it quickly.",
        "letter": "Dear hiring team{at},\n\nI am applying for the {title} position. {recent}"
        "My résumé shows experience with {skills}, which the role asks for.\n\nI would welcome "
        "the chance to discuss how this experience fits your needs.\n\nBest regards,\n{name}",
        "letter_recent": "Most recently I worked as {role} at {org}. ",
        "the_role": "this role",
        "h_skills": "Skills",
        "h_experience": "Experience",
        "h_education": "Education",
        "c_skills": "Put the {n} skill(s) the job asks for first: {skills}.",
        "r_skills": "They appear among the job's requirements.",
        "c_experience": "Moved highlights that mention the job's skills to the top of each "
        "position.",
        "r_experience": "Recruiters read the first lines first.",
        "c_missing": "Not added: {skills} (the résumé does not show them).",
        "r_missing": "Invent nothing: add them only if they are true.",
        "c_all": "Reordered by the offline keyword baseline; no wording was changed.",
        "r_all": "No language model was available for a real rewrite.",
        "because": "{change} Why: {reason}",
        "intro": "[Offline keyword baseline draft] Hello, I'm {name}. {recent}My experience "
        "covers {skills}. I'm interested in {title}{at} because it calls for {fit}.",
        "intro_recent": "Most recently I worked as {role} at {org}. ",
        "q_skill": "Tell me about your experience with {skill}.",
        "g_skill": "Tell one concrete story with a result, starting from: “{evidence}”.",
        "q_gap": "This role needs {skill}. How would you handle that?",
        "g_gap": "Be honest that your résumé does not show {skill}; point to related work and "
        "how you would ramp up.",
        "q_why": "Why do you want this role?",
        "g_why": "Link what the job asks for ({skills}) to what you have done.",
        "q_recent": "Walk me through your most recent position.",
        "g_recent": "{role} at {org}: pick two highlights, e.g. “{highlight}”.",
        "ask": "What does success look like in the first 90 days in this role?|"
        "How is the team organised, and who would I work with most?|"
        "What are the biggest challenges the team faces right now?",
        "ask_skill": "How is {skill} used in the team's day-to-day work?",
    },
    "zh": {
        "note": "（离线关键词基线，未使用语言模型。）",
        "ocr_note": "（离线关键词基线，依据从图片中识别出的文字，未使用语言模型。）",
        "none": "无",
        "sep": "、",
        "profile": "{who}。简历列出 {count} 段经历{recent}。提到的技能：{skills}。",
        "recent": "；最近一段：{org}，{role}",
        "job_summary": "{title}{at}。职位描述列出 {must} 项必备条件、{nice} 项加分项。"
        "提到的技能：{skills}。",
        "at": "（{company}）",
        "assessment": "关键词重合得分 {score}/100。简历体现了职位 {m} 项必备技能中的 {mm} 项"
        "（{matched}），以及 {n} 项加分技能中的 {nm} 项。缺少的必备技能：{missing}。"
        "这只是关键词比对，请结合职位描述全文判断。",
        "strength": "符合职位的{kind}技能：{skill}",
        "required": "必备",
        "preferred": "加分",
        "gap": "职位要求 {skill}，简历中没有提到。",
        "suggestion": "如果你有 {skill} 相关经验，请补充一条具体描述；"
        "如果没有，说明你会如何快速学习。",
        "letter": "尊敬的招聘团队{at}：\n\n您好！我申请贵公司的{title}职位。{recent}"
        "我的简历体现了 {skills} 等方面的经验，正是该职位所需要的。\n\n"
        "期待有机会进一步交流这些经验如何契合团队的需要。\n\n此致\n敬礼\n{name}",
        "letter_recent": "我最近在{org}担任{role}。",
        "the_role": "该职位",
        "h_skills": "技能",
        "h_experience": "工作经历",
        "h_education": "教育经历",
        "c_skills": "把职位需要的 {n} 项技能放在最前：{skills}。",
        "r_skills": "这些技能出现在职位要求中。",
        "c_experience": "把提到职位所需技能的要点移到每段经历的最前面。",
        "r_experience": "招聘方最先读到前几行。",
        "c_missing": "未添加：{skills}（简历中没有体现）。",
        "r_missing": "不得编造：只有确实具备时才写上。",
        "c_all": "由离线关键词基线调整顺序，未改动任何措辞。",
        "r_all": "没有可用的语言模型进行真正的改写。",
        "because": "{change}原因：{reason}",
        "intro": "[离线关键词基线草稿] 您好，我是{name}。{recent}我的经验涵盖 {skills}。"
        "我对{title}{at}很感兴趣，因为它需要 {fit}。",
        "intro_recent": "我最近在{org}担任{role}。",
        "q_skill": "请谈谈你在 {skill} 方面的经验。",
        "g_skill": "讲一个有结果的具体例子，可以从这一条说起：“{evidence}”。",
        "q_gap": "这个职位需要 {skill}，你打算怎么应对？",
        "g_gap": "坦诚说明简历中没有体现 {skill}；举出相关经历，并说明你会如何快速上手。",
        "q_why": "你为什么想应聘这个职位？",
        "g_why": "把职位需要的能力（{skills}）和你做过的事情联系起来。",
        "q_recent": "请介绍一下你最近的一段工作经历。",
        "g_recent": "{org}，{role}：挑两个要点展开，例如“{highlight}”。",
        "ask": "这个岗位入职后前 90 天怎样算做得好？|团队是如何分工的，我主要和谁合作？|"
        "团队目前面临的最大挑战是什么？",
        "ask_skill": "{skill} 在团队日常工作中是怎么用的？",
    },
}
