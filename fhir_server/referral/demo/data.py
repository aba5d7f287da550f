"""The demo consortium's constant data: hospitals, names, streets, clinical cases, the business
states the demo reaches and the operations that lead to each."""

from __future__ import annotations

from datetime import timedelta, timezone

from .. import codes

SID = codes.SID.rstrip("/")
CS = codes.CS.rstrip("/")
SD = codes.SD.rstrip("/")
CST = timezone(timedelta(hours=8), "CST")

#: every business state the demo reaches (referral-model.md §2.5)
STATES = (
    "drafted",
    "submitted",
    "received",
    "under-review",
    "info-requested",
    "booked",
    "approved",
    "bed-assigned",
    "arrived",
    "in-treatment",
    "admitted",
    "feedback-sent",
    "down-referred",
    "rejected",
    "redirected",
    "withdrawn",
    "expired",
    "no-show",
)

#: (id, name, level, district, departments)
HOSPITALS = (
    (
        "hz-first",
        "杭州市第一人民医院",
        "3A",
        "上城区",
        ("心血管内科", "内分泌科", "呼吸与危重症医学科", "神经内科"),
    ),
    ("xihu-people", "杭州市西湖区人民医院", "2A", "西湖区", ("心血管内科", "骨科")),
    ("gongshu-people", "杭州市拱墅区人民医院", "2B", "拱墅区", ("普通内科", "康复医学科")),
    ("hubin-chc", "湖滨街道社区卫生服务中心", "chc", "上城区", ("全科",)),
    ("xiaoying-chc", "小营街道社区卫生服务中心", "chc", "上城区", ("全科",)),
    ("cuiyuan-chc", "翠苑街道社区卫生服务中心", "chc", "西湖区", ("全科",)),
    ("mishixiang-chc", "米市巷街道社区卫生服务中心", "chc", "拱墅区", ("全科",)),
)
CONSORTIUM = ("consortium", "杭州市第一人民医院医疗集团（城市医联体）")

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩"
    "冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
)
GIVEN = (
    "伟芳娜秀敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
    "华建国志红玉梅海燕晓东春生文斌宇浩然欣怡子涵雨桐梓萱思远嘉豪"
)
STREETS = (
    "解放路",
    "庆春路",
    "延安路",
    "文三路",
    "莫干山路",
    "湖墅南路",
    "体育场路",
    "凤起路",
    "教工路",
    "古翠路",
)

#: clinical scenarios: (diagnosis, ICD-10, present illness, past history, treatment, results, plan)
UP_CASES = (
    (
        "高血压3级（极高危）",
        "I10",
        "反复头晕2月，近1周血压波动于180/110mmHg左右，联合三种降压药控制不佳。",
        "高血压病史10年，2型糖尿病5年。",
        "氨氯地平5mg qd、缬沙坦80mg qd、氢氯噻嗪12.5mg qd。",
        "心电图：左室高电压；血肌酐98μmol/L。",
        "建议上级医院心内科评估继发性高血压并调整方案。",
    ),
    (
        "2型糖尿病伴血糖控制不佳",
        "E11.9",
        "多饮多尿加重1月，空腹血糖12-15mmol/L，糖化血红蛋白9.8%。",
        "2型糖尿病8年，高脂血症。",
        "二甲双胍0.5g tid，格列美脲2mg qd。",
        "HbA1c 9.8%；尿微量白蛋白升高。",
        "建议内分泌科调整降糖方案，评估胰岛素治疗。",
    ),
    (
        "不稳定型心绞痛",
        "I20.0",
        "活动后胸闷胸痛3天，每次持续5-10分钟，含服硝酸甘油可缓解。",
        "冠心病史3年，吸烟30年。",
        "阿司匹林100mg qd，阿托伐他汀20mg qn。",
        "心电图：V1-V4 ST段压低0.1mV。",
        "建议行冠脉造影评估，必要时介入治疗。",
    ),
    (
        "慢性阻塞性肺疾病急性加重",
        "J44.1",
        "咳嗽咳痰气促加重5天，活动耐量明显下降。",
        "慢阻肺病史6年。",
        "布地奈德福莫特罗吸入，头孢呋辛口服3天效果欠佳。",
        "指脉氧89%；胸片：双肺纹理增粗。",
        "建议住院抗感染、平喘治疗。",
    ),
    (
        "短暂性脑缺血发作",
        "G45.9",
        "突发右侧肢体无力20分钟后自行缓解，共发作2次。",
        "高血压、高脂血症。",
        "阿司匹林100mg qd。",
        "头颅CT未见出血。",
        "建议神经内科进一步评估颈动脉及头颅MRI。",
    ),
    (
        "腰椎间盘突出症",
        "M51.2",
        "腰痛伴左下肢放射痛1月，保守治疗无明显好转。",
        "无特殊。",
        "塞来昔布、理疗2周。",
        "腰椎MRI：L4/5椎间盘突出。",
        "建议骨科评估手术指征。",
    ),
)
DOWN_CASES = (
    (
        "脑梗死恢复期",
        "I69.3",
        "脑梗死住院治疗14天，病情稳定，遗留左侧肢体轻度乏力。",
        "高血压病史。",
        "阿替普酶静脉溶栓后抗血小板、他汀治疗及早期康复。",
        "头颅MRI：右侧基底节区梗死灶。",
        "继续阿司匹林100mg qd、阿托伐他汀20mg qn；社区康复训练，7天内首次随访，监测血压。",
    ),
    (
        "冠心病PCI术后",
        "Z95.5",
        "冠脉支架植入术后7天，无胸痛，病情稳定出院。",
        "不稳定型心绞痛。",
        "前降支植入支架1枚，双联抗血小板。",
        "术后心电图正常，肌钙蛋白正常。",
        "双抗12个月，控制危险因素，1、3、6个月社区随访。",
    ),
    (
        "2型糖尿病（血糖已控制）",
        "E11.9",
        "胰岛素治疗方案调整后血糖平稳。",
        "2型糖尿病8年。",
        "门冬胰岛素30 早晚餐前皮下注射。",
        "空腹血糖6.8mmol/L。",
        "社区慢病管理，每月随访血糖，3个月复查HbA1c。",
    ),
)

#: the operations that lead to each state, after $submit (`slot`: submit with a booking)
PATHS: dict[str, tuple[str, ...]] = {
    "submitted": (),
    "received": ("$claim",),
    "under-review": ("$claim",),
    "info-requested": ("$claim", "$request-info"),
    "booked": ("slot",),
    "approved": ("$claim", "approve"),
    "bed-assigned": ("$claim", "approve", "bed"),
    "arrived": ("slot", "$check-in"),
    "in-treatment": ("slot", "$check-in", "$start-treatment"),
    "admitted": ("$claim", "approve", "bed", "$check-in", "$start-treatment"),
    "feedback-sent": ("slot", "$check-in", "$start-treatment", "feedback"),
    "down-referred": ("$claim", "approve", "bed", "$check-in", "$start-treatment", "down"),
    "rejected": ("$claim", "$reject"),
    "redirected": ("redirect",),
    "withdrawn": ("$cancel",),
    "expired": ("expire",),
    "no-show": ("slot", "$no-show"),
}
