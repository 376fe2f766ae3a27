; Inno Setup 6 script: Windows installer for the Crystal Designer one-folder bundle.
; NOT TESTED: written on Linux, where neither the Windows bundle nor this installer can be built.
;
; Build on Windows (x64) after the PyInstaller bundle (see packaging/README.md):
;   iscc /DAppVersion=0.1.0 packaging\windows\crystal-designer.iss
; Input:  packaging\dist\crystal-designer\  (crystal-designer.exe, crystal-designer-gui.exe, _internal\)
; Output: packaging\dist\crystal-designer-<version>-setup.exe

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define AppName "Crystal Designer"
#define GuiExe "crystal-designer-gui.exe"
#define CliExe "crystal-designer.exe"
#define ProgId "CrystalDesigner.cif"

[Setup]
AppId={{6C1B0E52-3F4D-4E8A-9A57-2B8F1C7D9E31}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Crystal Designer team
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Per-machine by default; the user may choose a per-user install (no admin rights needed).
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
ChangesAssociations=yes
SetupIconFile=..\icons\crystal-designer.ico
UninstallDisplayIcon={app}\{#GuiExe}
OutputDir=..\dist
OutputBaseFilename=crystal-designer-{#AppVersion}-setup
; ~1.3 GB of files; lzma2 solid compression gives a setup of roughly 350-450 MB (slow to build).
Compression=lzma2/max
SolidCompression=yes
LZMANumBlockThreads=4
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "associate"; Description: "Open .cif files with {#AppName}"; GroupDescription: "File associations:"

[Files]
Source: "..\dist\crystal-designer\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#GuiExe}"
Name: "{autoprograms}\{#AppName} self-test"; Filename: "{cmd}"; Parameters: "/k """"{app}\{#CliExe}"" --self-test"""; IconFilename: "{app}\{#GuiExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#GuiExe}"; Tasks: desktopicon

[Registry]
; .cif -> CrystalDesigner.cif (offered in "Open with"; the default only if the user picks it,
; Windows 10/11 no longer lets installers take over an extension).
Root: HKA; Subkey: "Software\Classes\.cif\OpenWithProgids"; ValueType: string; ValueName: "{#ProgId}"; ValueData: ""; Flags: uninsdeletevalue; Tasks: associate
Root: HKA; Subkey: "Software\Classes\.cif"; ValueType: string; ValueName: "Content Type"; ValueData: "chemical/x-cif"; Flags: createvalueifdoesntexist; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}"; ValueType: string; ValueName: ""; ValueData: "Crystallographic Information File"; Flags: uninsdeletekey; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\{#GuiExe},0"; Tasks: associate
Root: HKA; Subkey: "Software\Classes\{#ProgId}\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\{#GuiExe}"" gui --open ""%1"""; Tasks: associate
Root: HKA; Subkey: "Software\Classes\Applications\{#GuiExe}\SupportedTypes"; ValueType: string; ValueName: ".cif"; ValueData: ""; Flags: uninsdeletekey; Tasks: associate
Root: HKA; Subkey: "Software\Classes\Applications\{#GuiExe}\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\{#GuiExe}"" gui --open ""%1"""; Tasks: associate

[Run]
Filename: "{app}\{#GuiExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
