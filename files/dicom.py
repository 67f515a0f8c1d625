"""DICOM de-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

pydicom has no built-in profile, so Table E.1-1 (its "Basic Prof." column, 2020 edition) is
here as data, grouped by the standard's action code: Z = keep the attribute with an empty value,
X = remove it, D = a dummy value of the same VR, U = a new UID, the same new UID for every
occurrence of the same old one. Where the table offers a choice, which depends on the IOD the
file belongs to, `_resolve` takes one that needs no IOD knowledge and keeps no information.
UID attributes (the table's 50 U rows) are not listed: every instance UID in the file (any UI
value that is not a class, transfer syntax or coding scheme UID, nor a UID of the standard) is
replaced, which is the same set and more. Private attributes, curves and overlay text are
removed. Pixel data is left alone: a file that declares burned-in annotation is refused.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

# Keywords by Basic Profile action code. Retired attributes are included: old files have them.
TABLE_E1_1: Final[dict[str, str]] = {
    "Z": """
    AccessionNumber ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
    ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
    ConceptualVolumeCombinationDescription ConceptualVolumeDescription
    ConsultingPhysicianName DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest
    FractionationNotes IssuerOfTheContainerIdentifierSequence
    IssuerOfTheSpecimenIdentifierSequence ManufacturerDeviceIdentifier PatientBirthDate
    PatientID PatientName PatientSex PlacerOrderNumberImagingServiceRequest
    PrescriptionNotes PrescriptionNotesSequence RTAccessoryDeviceSlotID
    RTAccessoryHolderSlotID RTPhysicianIntentNarrative RadiationGenerationModeDescription
    ReasonForSuperseding ReferringPhysicianName SpecimenPreparationSequence StudyDate
    StudyID StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
    """,
    "X": """
    AcquisitionComments AcquisitionProtocolDescription ActualHumanPerformersSequence
    AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate
    AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
    AffectedSOPInstanceUID Allergies Arbitrary AuthorObserverSequence BeamDescription
    BolusDescription BranchOfService CameraOwnerName CassetteID
    ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription
    ClinicalTrialSeriesID ClinicalTrialTimePointDescription
    CommentsOnThePerformedProcedureStep CompensatorDescription
    ConfidentialityConstraintOnPatientDataDescription
    ConsultingPhysicianIdentificationSequence ContainerComponentID ContainerDescription
    ContentCreatorIdentificationCodeSequence ContributionDescription CountryOfResidence
    CurrentObserverTrial CurrentPatientLocation CurveDate CurveTime
    CustodialOrganizationSequence DataSetTrailingPadding DecompositionDescription
    DerivationDescription DeviceDescription DeviceSettingDescription
    DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress
    DistributionName DoseReferenceDescription EntityDescription EntityName
    EquipmentFrameOfReferenceDescription EthnicGroup ExpectedCompletionDateTime
    FixationDeviceDescription FractionGroupDescription FrameComments GPSAltitude
    GPSAltitudeRef GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef
    GPSDestDistance GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude
    GPSDestLongitudeRef GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude
    GPSLatitudeRef GPSLongitude GPSLongitudeRef GPSMapDatum GPSMeasureMode
    GPSProcessingMethod GPSSatellites GPSSpeed GPSSpeedRef GPSStatus GPSTimeStamp GPSTrack
    GPSTrackRef GPSVersionID GantryID GeneratorID HumanPerformerName
    HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
    ImagePresentationComments ImagingServiceRequestComments Impressions
    InstanceCoercionDateTime InstanceOriginStatus InstitutionAddress
    InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence
    InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
    InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
    InterpretationIDIssuer InterpretationRecorder InterpretationText
    InterpretationTranscriber IssuerOfAdmissionID IssuerOfAdmissionIDSequence
    IssuerOfPatientID IssuerOfServiceEpisodeID IssuerOfServiceEpisodeIDSequence
    LastMenstrualDate LensMake LensModel LensSerialNumber LensSpecification
    LongDeviceDescription MAC MakerNote MedicalAlerts MedicalRecordLocator MilitaryRank
    ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID
    MultienergyAcquisitionDescription NameOfPhysiciansReadingStudy
    NamesOfIntendedRecipientsOfResults ObservationDateTrial ObservationTimeTrial Occupation
    OrderCallbackPhoneNumber OrderCallbackTelecomInformation OrderEnteredBy
    OrderEntererLocation OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence
    OtherPatientNames OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge
    PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
    PatientInsurancePlanCodeSequence PatientMotherBirthName
    PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientSize PatientState PatientTelecomInformation
    PatientTelephoneNumbers PatientTransportArrangements PatientWeight PerformedLocation
    PerformedProcedureStepDescription PerformedProcedureStepEndDate
    PerformedProcedureStepEndDateTime PerformedProcedureStepEndTime PerformedProcedureStepID
    PerformedProcedureStepStartDate PerformedProcedureStepStartDateTime
    PerformedProcedureStepStartTime PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence PerformedStationName
    PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
    PerformingPhysicianName PersonAddress PersonTelecomInformation PersonTelephoneNumbers
    PhysicianApprovingInterpretation PhysiciansOfRecord
    PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
    PlateID PreMedication PregnancyStatus PrescriptionDescription
    PriorTreatmentDoseDescription ProcedureStepCancellationDateTime RTPlanDescription
    RTPlanName ReasonForOmissionDescription ReasonForRequestedProcedureCodeSequence
    ReasonForStudy ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure
    ReasonForVisit ReasonForVisitCodeSequence ReferencedDigitalSignatureSequence
    ReferencedPatientAliasSequence ReferencedPatientPhotoSequence ReferencedPatientSequence
    ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers
    RegionOfResidence RequestAttributesSequence RequestedContrastAgent
    RequestedProcedureComments RequestedProcedureID RequestedProcedureLocation
    RequestingPhysician RequestingService RespiratoryMotionCompensationTechniqueDescription
    ResponsibleOrganization ResponsiblePerson ResultsComments
    ResultsDistributionListSequence ResultsIDIssuer ScheduledHumanPerformersSequence
    ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
    ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
    ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepLocation
    ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime
    ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence
    ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation
    ScheduledStudyLocationAETitle SeriesDescription ServiceEpisodeDescription
    ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier
    SmokingStatus SourceManufacturer SpecialNeeds SpecimenAccessionNumber
    SpecimenDetailedDescription SpecimenShortDescription StudyComments StudyDescription
    StudyIDIssuer TelephoneNumberTrial TextComments TextString TimezoneOffsetFromUTC
    TopicAuthor TopicKeywords TopicSubject TopicTitle TreatmentMachineName UDISequence
    UniqueDeviceIdentifier VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial
    VisitComments XRayDetectorLabel
    """,
    "D": """
    ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID
    ClinicalTrialSponsorName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
    ContainerIdentifier ContentSequence DeviceLabel EntityLabel EntityLongLabel
    FlowIdentifier FlowIdentifierSequence FrameOriginTimestamp GraphicAnnotationSequence
    ImpedanceMeasurementDateTime InterlockDateTime InterlockDescription
    InterlockOriginDescription OverrideDateTime PersonIdentificationCodeSequence PersonName
    RTPlanLabel RTPrescriptionLabel RTToleranceSetLabel RadiationDoseIdentificationLabel
    RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel
    RecordedRTControlPointDateTime SourceEndDateTime SourceIdentifier SourceStartDateTime
    SpecimenIdentifier TreatmentPositionGroupLabel TreatmentSite
    TreatmentToleranceViolationDateTime TreatmentToleranceViolationDescription
    UserContentLabel UserContentLongLabel VerifyingObserverName VerifyingObserverSequence
    VerifyingOrganization XRayDetectorID XRaySourceID
    """,
    "X/Z": """
    AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText
    PatientSexNeutered ReferencedStudySequence RequestedProcedureDescription ReviewerName
    SourceSerialNumber
    """,
    "X/D": """
    AcquisitionDeviceProcessingDescription DetectorID EndAcquisitionDateTime
    FirstTreatmentDate IntendedPhaseEndDate IntendedPhaseStartDate MostRecentTreatmentDate
    OperatorIdentificationSequence ProtocolName RTPlanDate RTPlanTime
    RTTreatmentApproachLabel SeriesDate SeriesTime StartAcquisitionDateTime TreatmentDate
    TreatmentTime
    """,
    "Z/D": """
    ContentCreatorName ContentDate ContentTime ContrastBolusAgent
    """,
    "X/Z/D": """
    AcquisitionDateTime DeviceSerialNumber InstitutionCodeSequence InstitutionName
    OperatorsName ReferencedPerformedProcedureStepSequence StationName
    """,
    "X/Z/U*": """
    ReferencedImageSequence SourceImageSequence
    """,
}

_KEEP, _Z, _X, _D = "K", "Z", "X", "D"


# Not in the 2020 table, removed too: they date the examination as precisely as Content Date.
_EXTRA: Final = {"X/D": "InstanceCreationDate InstanceCreationTime"}


def _by_tag() -> dict[int, str]:
    codes: dict[int, str] = {}
    for table in (TABLE_E1_1, _EXTRA):
        for code, keywords in table.items():
            for keyword in keywords.split():
                tag = tag_for_keyword(keyword)
                if tag is None:  # a typo here would silently keep an identifying attribute
                    raise RuntimeError(f"unknown DICOM keyword {keyword}")
                codes[tag] = code
    return codes


_CODES: Final = _by_tag()

# Group 0002 is not walked with the dataset; these name the sending station.
_META_REMOVED: Final = (
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation",
)  # fmt: skip
# UIDs that name a kind of thing, not a patient's instance of it.
_KEPT_UIDS: Final = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "MappingResourceUID"})
_STANDARD_ROOT: Final = "1.2.840.10008."
_DUMMIES: Final = {
    "PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS",
    "LT": "ANONYMOUS", "UT": "ANONYMOUS", "UC": "ANONYMOUS", "CS": "ANONYMOUS",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000",
}  # fmt: skip
METHOD: Final = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile"


class DeidentifyError(Exception):
    """The file is not DICOM, or cannot be de-identified by this profile."""


def is_dicom(head: bytes) -> bool:
    """Whether `head` starts like a DICOM file: a 128-byte preamble, then "DICM"."""
    return head[128:132] == b"DICM"


def deidentify(src: Path, dst: Path, *, uid_salt: bytes | None = None) -> None:
    """Write a de-identified copy of the DICOM file `src` to `dst` (mode 0600).

    New UIDs derive from the old ones and `uid_salt`: the same salt keeps the UIDs of several
    files of one study consistent with each other. Without one, a random salt is used, which
    keeps references consistent within this file only. A salt must stay secret.
    """
    try:
        ds = pydicom.dcmread(src)
    except InvalidDicomError as exc:
        raise DeidentifyError("not a DICOM file") from exc
    except (EOFError, OSError, ValueError, KeyError) as exc:  # uploaded bytes: truncated, odd
        raise DeidentifyError("an unreadable DICOM file") from exc
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise DeidentifyError("the pixel data carries burned-in annotation")
    remap = _UidMap(uid_salt or secrets.token_bytes(32))
    ds.remove_private_tags()
    ds.walk(lambda parent, elem: _apply(parent, elem, remap))
    _clean_meta(ds, remap)
    _mark(ds)
    _write(ds, dst)


def _write(ds: Dataset, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            ds.save_as(out, enforce_file_format=True)
    except BaseException as exc:
        dst.unlink(missing_ok=True)  # never a half-written copy that looks finished
        if isinstance(exc, (AttributeError, ValueError)):  # required file meta missing, ...
            raise DeidentifyError("the file cannot be written as valid DICOM") from exc
        raise


class _UidMap:
    def __init__(self, salt: bytes) -> None:
        self._salt = salt.hex()
        self._seen: dict[str, str] = {}

    def __call__(self, old: str) -> str:
        if old not in self._seen:
            # generate_uid hashes its entropy sources: the same (salt, old UID) always gives
            # the same new UID, and the old one cannot be read back without the salt.
            self._seen[old] = str(generate_uid(entropy_srcs=[self._salt, old]))
        return self._seen[old]


def _apply(parent: Dataset, elem: DataElement, remap: _UidMap) -> None:
    code = _CODES.get(int(elem.tag)) or _repeating_group_code(elem.tag)
    action = _resolve(code, elem.VR) if code else _KEEP
    if action == _X:
        del parent[elem.tag]
    elif action == _Z:
        elem.value = Sequence() if elem.VR == "SQ" else None
    elif action == _D:
        elem.value = _dummy(elem)
    elif elem.VR == "UI" and _is_instance_uid(elem):
        values = elem.value if elem.VM > 1 else [elem.value]
        new = [remap(str(uid)) for uid in values if uid]
        elem.value = new if elem.VM > 1 else (new[0] if new else elem.value)


def _resolve(code: str, vr: str) -> str:
    """One action for the table's code. The standard's choices (X/Z, X/D, X/Z/D, Z/D) depend
    on whether the IOD requires the attribute: Z is valid whatever the IOD (an empty value
    is allowed for Type 2 and 3), so it is preferred, then X; D only when the table says D alone.
    """
    options = code.split("/")
    if "U*" in options:
        # References to other images: kept, their UIDs replaced like every other UID.
        return _KEEP
    if _Z in options:
        return _Z
    if _X in options or vr == "SQ":
        # A "dummy" sequence would keep items of codes and names chosen by a person
        # (observer, person identification, content): removed instead.
        return _X
    return _D


def _dummy(elem: DataElement) -> object:
    if elem.VR in _DUMMIES:
        return _DUMMIES[elem.VR]
    if elem.VR in ("OB", "OW", "UN"):
        # Same length, all zeros: some readers expect a fixed size (a timestamp, an id).
        return bytes(len(elem.value or b"") or 2)
    return "ANONYMOUS" if isinstance(elem.value, str) else None


def _repeating_group_code(tag: BaseTag) -> str | None:
    group, element = tag.group, tag.element
    # Curve data (50xx,xxxx), overlay data (60xx,3000) and overlay comments (60xx,4000) can
    # carry text drawn over the image.
    if 0x5000 <= group <= 0x50FF and group % 2 == 0:
        return _X
    if 0x6000 <= group <= 0x60FF and group % 2 == 0 and element in (0x3000, 0x4000):
        return _X
    return None


def _is_instance_uid(elem: DataElement) -> bool:
    keyword = elem.keyword or ""
    if keyword.endswith("ClassUID") or keyword in _KEPT_UIDS:
        return False
    values = elem.value if elem.VM > 1 else [elem.value]
    return not all(str(uid).startswith(_STANDARD_ROOT) for uid in values)


def _clean_meta(ds: Dataset, remap: _UidMap) -> None:
    meta = ds.file_meta
    for keyword in _META_REMOVED:
        if keyword in meta:
            delattr(meta, keyword)
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    elif "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = UID(remap(str(meta.MediaStorageSOPInstanceUID)))


def _mark(ds: Dataset) -> None:
    """Say what was done, in the attributes the standard provides for it (PS3.15 E.1.1)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    # Study dates are gone, so intervals between studies can no longer be measured.
    ds.LongitudinalTemporalInformationModified = "REMOVED"
