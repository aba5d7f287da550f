// Two languages: zh-CN (default) and English. Interface strings live here; the displays of our
// codes (business status, direction, referral type, ...) come from our CodeSystems'
// designations (GET /apps/codes.json, built from terminology/), never from this file.
const STRINGS = {
  "app.workbench": ["分级诊疗工作台", "Referral workbench"],
  "app.patient": ["掌上医院", "Patient app"],
  "nav.referrals": ["转诊业务", "Referrals"],
  "nav.record": ["患者资料", "Patient record"],
  "nav.checkin": ["扫码报到", "Check-in"],
  "nav.stats": ["统计分析", "Statistics"],
  "nav.consult": ["会诊业务", "Consultations"],
  "nav.notifications": ["通知", "Notifications"],
  "nav.messages": ["消息", "Messages"],
  "nav.soon": ["远程会诊上线后提供", "Available with teleconsultation"],
  "lang.switch": ["English", "中文"],
  "signout": ["退出", "Sign out"],
  "loading": ["加载中…", "Loading…"],
  "empty": ["暂无数据", "Nothing here"],
  "forbidden": ["无权查看（医联体共享规则）", "Not visible to you (consortium sharing rule)"],
  "err.network": ["网络连接失败，已保留您填写的内容，请稍后重试", "Network error; what you typed is kept, please retry"],
  "err.expired": ["登录已过期，正在重新登录…", "Session expired, signing in again…"],
  "err.server": ["服务器拒绝了请求", "The server refused the request"],
  "err.slotTaken": ["该号源已被他人预约，请重新选择号源", "That slot was taken meanwhile; choose another"],
  "err.transition": ["当前状态不允许此操作", "Not allowed in the referral's current state"],
  "err.required": ["缺少必填项", "A required item is missing"],
  "err.denied": ["没有权限执行此操作", "You may not do this"],
  "err.notFound": ["未找到该记录", "Not found"],
  "err.invalid": ["内容不符合要求", "The content is not valid"],
  "retry": ["重试", "Retry"],
  "tab.incoming": ["待处理转入", "Incoming"],
  "tab.accepted": ["待接诊", "Awaiting arrival"],
  "tab.today": ["今日到诊", "Arrivals today"],
  "tab.outgoing": ["转出", "Outgoing"],
  "tab.followup": ["待随访", "Follow-ups due"],
  "col.number": ["转诊单号", "Referral no."],
  "col.patient": ["患者", "Patient"],
  "col.direction": ["方向", "Direction"],
  "col.type": ["类型", "Type"],
  "col.from": ["转出机构", "From"],
  "col.to": ["转入机构", "To"],
  "col.status": ["状态", "Status"],
  "col.time": ["时间", "Time"],
  "col.due": ["截止", "Due"],
  "act.open": ["查看", "Open"],
  "act.claim": ["认领", "Claim"],
  "act.accept": ["接收", "Accept"],
  "act.reject": ["拒绝", "Reject"],
  "act.checkin": ["报到", "Check in"],
  "act.start": ["开始诊疗", "Start treatment"],
  "act.complete": ["完成并下转", "Complete with down-referral"],
  "act.feedback": ["完成（回执）", "Complete (feedback)"],
  "act.cancel": ["撤回", "Withdraw"],
  "act.print": ["打印转诊单", "Print slip"],
  "act.pdf": ["下载PDF", "Download PDF"],
  "act.new": ["发起转诊", "New referral"],
  "act.submit": ["提交转诊", "Submit referral"],
  "act.save": ["保存草稿", "Save draft"],
  "act.refresh": ["刷新", "Refresh"],
  "act.scan": ["打开摄像头扫码", "Scan with camera"],
  "act.find": ["查找", "Find"],
  "act.back": ["返回", "Back"],
  "act.approve": ["同意", "Approve"],
  "form.title": ["转诊申请单", "Referral request"],
  "form.direction": ["转诊方向", "Direction"],
  "form.type": ["转诊类型", "Referral type"],
  "form.priority": ["紧急程度", "Priority"],
  "form.reason": ["转诊原因", "Reason for referral"],
  "form.diagnosis": ["初步诊断", "Diagnosis"],
  "form.icd": ["ICD-10编码", "ICD-10 code"],
  "form.history": ["病史摘要", "History"],
  "form.results": ["检查检验结果（从病历选取）", "Results (picked from the record)"],
  "form.target": ["转入医院", "Target hospital"],
  "form.department": ["转入科室", "Department"],
  "form.slot": ["预约号源（医联体预留）", "Appointment slot (reserved)"],
  "form.noSlot": ["不预约（由对方审核）", "No booking (receiver reviews)"],
  "form.inpatient": ["住院信息", "Inpatient details"],
  "form.ward": ["拟入病区/床位要求", "Ward / bed needs"],
  "form.admission": ["拟入院日期", "Planned admission"],
  "form.plan": ["转诊目的/建议", "Purpose / plan"],
  "form.requiredMark": ["必填", "required"],
  "form.saved": ["已提交", "Submitted"],
  "form.keepDraft": ["已恢复未提交的内容", "Restored what you had typed"],
  "priority.routine": ["普通", "Routine"],
  "priority.urgent": ["紧急", "Urgent"],
  "reject.reason": ["拒绝原因", "Reason for rejection"],
  "reject.redirect": ["建议改转至", "Suggest instead"],
  "reject.none": ["（不改派）", "(no redirect)"],
  "detail.timeline": ["转诊进程", "Timeline"],
  "detail.provenance": ["操作记录", "Activity"],
  "detail.approvals": ["审批子任务", "Approval sub-tasks"],
  "detail.appointment": ["预约", "Appointment"],
  "detail.slip": ["转诊单", "Referral slip"],
  "down.reason": ["下转原因/康复建议", "Reason for down-referral / rehab advice"],
  "down.target": ["下转至", "Refer down to"],
  "checkin.code": ["转诊单二维码内容或转诊单号", "Slip QR code or referral number"],
  "checkin.hint": ["扫描转诊单上的二维码，或手动输入", "Scan the slip's QR code, or type it"],
  "checkin.done": ["报到成功", "Checked in"],
  "checkin.noCamera": ["此浏览器不支持摄像头扫码，请手动输入", "No camera scanning here; type the code"],
  "stats.title": ["转诊统计", "Referral statistics"],
  "stats.up": ["上转", "Up"],
  "stats.down": ["下转", "Down"],
  "stats.lateral": ["平转", "Lateral"],
  "stats.submitted": ["转诊量", "Referrals"],
  "stats.accepted": ["已接收", "Accepted"],
  "stats.rejected": ["已拒绝", "Rejected"],
  "stats.completed": ["已完成", "Completed"],
  "stats.rate": ["接收率", "Acceptance rate"],
  "stats.median": ["决策时间中位数（小时）", "Median hours to decision"],
  "stats.byHospital": ["按医院", "By hospital"],
  "stats.byMonth": ["按月份", "By month"],
  "stats.from": ["开始日期", "From"],
  "stats.to": ["结束日期", "To"],
  "rec.summary": ["概要", "Summary"],
  "rec.encounters": ["就诊记录", "Encounters"],
  "rec.results": ["检验检查结果", "Results"],
  "rec.reports": ["报告", "Reports"],
  "rec.images": ["影像", "Images"],
  "rec.documents": ["文档", "Documents"],
  "rec.conditions": ["诊断/问题", "Conditions"],
  "rec.viewer": ["打开影像浏览器", "Open the image viewer"],
  "rec.birth": ["出生日期", "Born"],
  "rec.gender": ["性别", "Gender"],
  "rec.org": ["管理机构", "Managing organization"],
  "me.referrals": ["我的转诊", "My referrals"],
  "me.appointment": ["我的预约", "My appointments"],
  "me.slip": ["转诊单（报到时出示二维码）", "Referral slip (show the QR code at check-in)"],
  "me.followups": ["随访任务", "Follow-up tasks"],
  "me.results": ["我的检查结果", "My results"],
  "me.consult": ["会诊时间", "Consultation times"],
  "gender.male": ["男", "Male"],
  "gender.female": ["女", "Female"],
  "gender.other": ["其他", "Other"],
  "gender.unknown": ["未知", "Unknown"],
  "launchPatient": ["当前患者", "Current patient"],
  "myOrg": ["本院", "My hospital"],
  "newArrival": ["有新的转入申请", "A new referral has arrived"],
  "col.note": ["备注", "Note"],
  "col.activity": ["活动", "Activity"],
  "col.agent": ["操作者", "Agent"],
  "col.approver": ["审批人", "Approver"],
  "col.qr": ["二维码", "QR code"],
  "col.test": ["项目", "Test"],
  "col.value": ["结果", "Value"],
  "col.report": ["报告", "Report"],
  "col.conclusion": ["结论", "Conclusion"],
  "col.document": ["文档", "Document"],
  "col.study": ["检查", "Study"],
  "col.provider": ["机构", "Provider"],
  "out.all": ["全部", "All"],
  "out.draft": ["草稿", "Drafts"],
  "out.submitted": ["已提交", "Submitted"],
  "out.booked": ["已预约", "Booked"],
  "out.rejected": ["已拒绝/撤回", "Rejected"],
  "out.completed": ["已完成", "Completed"],
  "form.review": ["号源由转入医院复核后确认", "The receiving hospital reviews the booking"],
  "stats.scope": ["统计范围", "Scope"],
  "stats.consortium": ["医联体", "Consortium"],
  "rec.pick": ["请从转诊列表选择患者", "Pick a patient from a worklist"],
  "appt.pending": ["待确认", "Pending"],
  "appt.booked": ["已预约", "Booked"],
  "appt.arrived": ["已到诊", "Arrived"],
  "appt.fulfilled": ["已就诊", "Fulfilled"],
  "appt.cancelled": ["已取消", "Cancelled"],
  "appt.noshow": ["爽约", "No-show"],
  "task.requested": ["待处理", "To do"],
  "task.received": ["已接收", "Received"],
  "task.accepted": ["已接受", "Accepted"],
  "task.in-progress": ["进行中", "In progress"],
  "task.completed": ["已完成", "Completed"],
  "task.failed": ["未完成", "Failed"],
  "task.cancelled": ["已取消", "Cancelled"],
  "task.rejected": ["已拒绝", "Rejected"],
};

const KEY = "yl-lang";
let lang = localStorage.getItem(KEY) === "en" ? "en" : "zh";
let codes = {};

export function language() { return lang; }

export function setLanguage(value) {
  lang = value === "en" ? "en" : "zh";
  localStorage.setItem(KEY, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
}

/** An interface string in the current language (`fallback`, else the key, when unknown). */
export function t(key, fallback) {
  const found = STRINGS[key];
  return found ? found[lang === "zh" ? 0 : 1] : fallback === undefined ? key : fallback;
}

/** Our CodeSystems' displays (zh-CN designation or English display), loaded once. */
export async function loadCodes() {
  const res = await fetch(new URL("../codes.json", import.meta.url));
  codes = res.ok ? await res.json() : {};
}

/** The display of code `code` of `system` in the current language (the code when unknown). */
export function display(system, code) {
  const found = codes[system] && codes[system][code];
  return found ? found[lang] : code;
}

/** The display of a Coding or CodeableConcept's first coding, or its text. */
export function displayOf(concept) {
  if (!concept) return "";
  const coding = concept.coding ? concept.coding[0] : concept;
  if (coding && coding.system && codes[coding.system]) return display(coding.system, coding.code);
  return concept.text || (coding && (coding.display || coding.code)) || "";
}

setLanguage(lang);
